#include "core/memory_manager.h"

#include "common/log.h"
#include "core/buffer_object.h"

namespace sharegpu {

bool HostMemoryBudget::TryCharge(uint64_t bytes) {
  uint64_t used = used_.load(std::memory_order_relaxed);
  do {
    if (!FitsNextTo(used, bytes)) return false;
  } while (!used_.compare_exchange_weak(used, used + bytes, std::memory_order_relaxed));
  const uint64_t now = used + bytes;
  uint64_t peak = peak_.load(std::memory_order_relaxed);
  while (peak < now && !peak_.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
    // `peak` now holds the current value: retry while ours is still higher.
  }
  return true;
}

void HostMemoryBudget::Uncharge(uint64_t bytes) {
  used_.fetch_sub(bytes, std::memory_order_relaxed);
}

Result<std::shared_ptr<MemoryManager>> MemoryManager::Create(const std::string& name,
                                                             uint64_t vram_size,
                                                             CacheMode cache_mode,
                                                             uint64_t max_hostmem,
                                                             CacheFactory cache_factory) {
  using R = Result<std::shared_ptr<MemoryManager>>;
  auto arena = Arena::Create("sharegpu-vram:" + name, vram_size);
  if (!arena) return R::Error(arena.status());
  return std::make_shared<MemoryManager>(name, std::shared_ptr<Arena>(std::move(arena).value()),
                                         cache_mode, max_hostmem, std::move(cache_factory));
}

MemoryManager::MemoryManager(std::string name, std::shared_ptr<Arena> arena, CacheMode cache_mode,
                             uint64_t max_hostmem, CacheFactory cache_factory)
    : name_(std::move(name)),
      arena_(std::move(arena)),
      cache_mode_(cache_mode),
      cache_factory_(std::move(cache_factory)),
      hostmem_(std::make_shared<HostMemoryBudget>(max_hostmem)) {}

namespace {
// Storage whose lifetime also pins what it was carved from (the arena).
struct StorageHolder {
  std::shared_ptr<Arena> arena;
  std::shared_ptr<Storage> storage;
  ~StorageHolder() { storage.reset(); }  // free the range before the arena can go
};

// SYSTEM storage and its charge on the host memory budget, returned when the storage goes.
struct ChargedStorageHolder {
  std::shared_ptr<SystemPool> pool;  // outlives the range carved from it
  std::shared_ptr<HostMemoryBudget> budget;
  uint64_t charged = 0;
  std::shared_ptr<Storage> storage;
  ~ChargedStorageHolder() {
    storage.reset();  // unmapped first: the pages are gone before the budget lets others in
    budget->Uncharge(charged);
  }
};
}  // namespace

Result<std::shared_ptr<Storage>> MemoryManager::AllocateOwnStorage(uint64_t size) {
  return AllocateSystemStorage(size, true);
}

Result<std::shared_ptr<Storage>> MemoryManager::AllocateSystemStorage(uint64_t size, bool own) {
  using R = Result<std::shared_ptr<Storage>>;
  // Memfd's own checks, made before the charge: PageAlignUp would wrap for huge sizes.
  if (size == 0) return R::Error(-EINVAL);
  if (size > Memfd::kMaxSize) return R::Error(-E2BIG);
  const uint64_t bytes = PageAlignUp(size);  // what the memfd will hold

  // The holder exists before the charge so that any failure below gives the charge back.
  auto holder = std::make_shared<ChargedStorageHolder>();
  holder->budget = hostmem_;
  if (!hostmem_->TryCharge(bytes)) {
    Logf(LogLevel::kDebug, "%s: host memory budget refuses %llu bytes (%llu of %llu used)",
         name_.c_str(), static_cast<unsigned long long>(bytes),
         static_cast<unsigned long long>(hostmem_->used()),
         static_cast<unsigned long long>(hostmem_->limit()));
    return R::Error(-ENOSPC);
  }
  holder->charged = bytes;
  Result<std::shared_ptr<Storage>> storage = R::Error(-ENOSPC);
  if (own) {
    storage = Storage::CreateSystem("sharegpu-own:" + name_, size);
    // out of descriptors or memory: reported as the pool's failures are
    if (!storage) return R::Error(storage.status() == -ENOMEM ? -ENOSPC : storage.status());
  } else {
    auto pool = Pool();
    if (!pool) return R::Error(pool.status());
    holder->pool = std::move(pool).value();
    storage = Storage::CreatePooled(*holder->pool, size);
    if (!storage) return storage;
  }
  holder->storage = std::move(storage).value();
  Storage* raw = holder->storage.get();
  return std::shared_ptr<Storage>(holder, raw);
}

Result<std::shared_ptr<SystemPool>> MemoryManager::Pool() {
  std::lock_guard lock(pool_mu_);
  if (!pool_) {
    auto pool = SystemPool::Create("sharegpu-sys:" + name_);
    // Out of descriptors (or memory) for the one memfd: reported as the pool's other
    // failures are, -ENOSPC (the guest gets -ENOSPC, QEMU goes on).
    if (!pool) return Result<std::shared_ptr<SystemPool>>::Error(-ENOSPC);
    pool_ = std::move(pool).value();
  }
  return pool_;
}

std::vector<std::shared_ptr<BufferObject>> MemoryManager::LruCandidates(size_t max) {
  std::vector<std::shared_ptr<BufferObject>> out;  // released by the caller, after lru_mu_
  std::lock_guard lock(lru_mu_);
  for (auto it = lru_.begin(); it != lru_.end() && out.size() < max;) {
    if (auto bo = it->ref.lock()) {
      out.push_back(std::move(bo));
      ++it;
    } else {
      lru_index_.erase(it->bo);
      it = lru_.erase(it);
    }
  }
  return out;
}

Result<std::shared_ptr<Storage>> MemoryManager::AllocateStorage(Placement placement, uint64_t size,
                                                                const BufferObject* requester,
                                                                bool may_evict) {
  using R = Result<std::shared_ptr<Storage>>;
  if (placement == Placement::kSystem) return AllocateSystemStorage(size);
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

    // VRAM is full: evict the least recently used buffer we can lock without waiting. The
    // LRU is looked at from its old end in growing batches (32, 64, ...), so an eviction
    // costs O(1) when the oldest buffers can go and O(N) only when most of them are pinned.
    bool evicted = false;
    size_t seen = 0;
    for (size_t batch = 32; !evicted; batch *= 2) {
      std::vector<std::shared_ptr<BufferObject>> candidates = LruCandidates(batch);
      for (size_t i = seen; i < candidates.size(); ++i) {
        const auto& victim = candidates[i];
        if (victim.get() == requester || victim->pin_count() > 0) continue;
        // Not one the budget cannot take now: its move would wait for its writers in vain.
        if (!hostmem_->Fits(victim->size())) continue;
        if (!victim->resv().TryLock()) continue;  // busy or ours: not a victim now
        // A job still uses it (fences pending): its move would have to wait for the engine,
        // and whoever asked for room may be the one that has to let the engine go on.
        if (!victim->resv().TestSignaled(ResvUsage::kBookkeep)) {
          victim->resv().Unlock();
          continue;
        }
        Status err = victim->placement() == Placement::kDevice
                         ? victim->Move(Placement::kSystem)
                         : -EAGAIN;
        victim->resv().Unlock();
        // A failed eviction (writers pending, the host memory budget full) changed nothing:
        // the victim is still in VRAM with its contents; try the next one.
        if (err == kOk) {
          evictions_.fetch_add(1, std::memory_order_relaxed);
          Logf(LogLevel::kDebug, "%s: evicted %s to make room for %llu bytes", name_.c_str(),
               victim->name().c_str(), static_cast<unsigned long long>(size));
          evicted = true;
          break;
        }
      }
      if (candidates.size() < batch) break;  // the whole LRU was looked at
      seen = candidates.size();
    }
    if (!evicted) return R::Error(-ENOSPC);
  }
}

void MemoryManager::LruTouch(const std::shared_ptr<BufferObject>& bo) {
  std::lock_guard lock(lru_mu_);
  auto it = lru_index_.find(bo.get());
  if (it != lru_index_.end()) {
    lru_.splice(lru_.end(), lru_, it->second);  // iterators stay valid
    return;
  }
  lru_.push_back({bo.get(), bo});
  lru_index_.emplace(bo.get(), std::prev(lru_.end()));
}

void MemoryManager::LruRemove(const BufferObject* bo) {
  std::lock_guard lock(lru_mu_);
  auto it = lru_index_.find(bo);
  if (it == lru_index_.end()) return;
  lru_.erase(it->second);
  lru_index_.erase(it);
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
  MemoryStats s;
  s.evictions = evictions_.load(std::memory_order_relaxed);
  s.moves = moves_.load(std::memory_order_relaxed);
  s.ghosts_pending = ghosts_.load(std::memory_order_relaxed);
  s.hostmem_used = hostmem_->used();
  s.hostmem_limit = hostmem_->limit();
  s.hostmem_peak = hostmem_->peak();
  std::lock_guard lock(pool_mu_);
  if (pool_) s.system_pool = pool_->stats();
  return s;
}

}  // namespace sharegpu
