#include "core/buffer_object.h"

#include <cstring>

#include "common/log.h"
#include "core/resv_guard.h"

namespace sharegpu {

namespace {
constexpr uint64_t kNoOffset = ~uint64_t{0};

// Old storage waiting for the fences that may still use it.
struct Ghost {
  std::shared_ptr<Storage> storage;
  std::shared_ptr<MemoryManager> mm;
  std::atomic<size_t> remaining;
  void Release() {
    if (remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      storage.reset();
      mm->GhostReleased();
    }
  }
};
}  // namespace

Result<std::shared_ptr<BufferObject>> BufferObject::Create(std::shared_ptr<MemoryManager> mm,
                                                           uint64_t size, Placement placement,
                                                           std::string name, bool may_evict) {
  using R = Result<std::shared_ptr<BufferObject>>;
  if (!mm || size == 0) return R::Error(-EINVAL);
  if (size > kMaxSize) return R::Error(-E2BIG);
  if (placement != Placement::kDevice && placement != Placement::kSystem) return R::Error(-EINVAL);
  size = PageAlignUp(size);
  auto storage = mm->AllocateStorage(placement, size, nullptr, may_evict);
  if (!storage) return R::Error(storage.status());
  auto bo = std::make_shared<BufferObject>(mm, size, std::move(name), std::move(storage).value());
  if (placement == Placement::kDevice) mm->LruTouch(bo);
  return bo;
}

Result<std::shared_ptr<BufferObject>> BufferObject::CreateForeign(
    std::shared_ptr<MemoryManager> mm, OwnedFd fd, uint64_t size, bool writable,
    std::string name) {
  using R = Result<std::shared_ptr<BufferObject>>;
  if (!mm) return R::Error(-EINVAL);
  if (size > kMaxSize) return R::Error(-E2BIG);
  auto storage = Storage::CreateForeign(std::move(fd), size, writable);
  if (!storage) return R::Error(storage.status());
  // SYSTEM: never on the LRU, so never an eviction victim.
  return std::make_shared<BufferObject>(mm, size, std::move(name), std::move(storage).value());
}

BufferObject::BufferObject(std::shared_ptr<MemoryManager> mm, uint64_t size, std::string name,
                           std::shared_ptr<Storage> storage)
    : mm_(std::move(mm)),
      size_(size),
      name_(std::move(name)),
      cache_(mm_->CreateCache()),
      storage_(std::move(storage)),
      foreign_(storage_->foreign()),
      read_only_(!storage_->writable()),
      placement_(storage_->placement()),
      vram_offset_(storage_->placement() == Placement::kDevice ? storage_->offset() : kNoOffset) {}

BufferObject::~BufferObject() { mm_->LruRemove(this); }

Placement BufferObject::placement() const { return placement_.load(std::memory_order_relaxed); }
uint64_t BufferObject::vram_offset() const { return vram_offset_.load(std::memory_order_relaxed); }

void BufferObject::ForEachCache(const std::function<void(BufferCache&)>& fn) {
  fn(*cache_);
  if (auto dmabuf = exported()) {
    for (const AttachmentRef& a : dmabuf->attachments()) fn(a->cache());
  }
}

Status BufferObject::Move(Placement target, bool may_evict) {
  if (!resv_.IsHeld()) {
    Logf(LogLevel::kError, "bo %s: move requires the reservation lock held", name_.c_str());
    return -ENOLCK;
  }
  if (target != Placement::kDevice && target != Placement::kSystem) return -EINVAL;
  if (foreign_) return -EBUSY;  // another process owns the pages: they stay where they are
  if (storage_->placement() == target) return kOk;
  if (keep_own()) return -EBUSY;  // another process maps its storage (docs/broker.md)
  return MoveInto(target, may_evict, false);
}

Status BufferObject::MoveToOwnStorage(bool relocate) {
  if (!resv_.IsHeld()) {
    Logf(LogLevel::kError, "bo %s: move requires the reservation lock held", name_.c_str());
    return -ENOLCK;
  }
  if (foreign_) return -EBUSY;
  if (storage_->own() && !relocate) {
    set_keep_own(true);
    return kOk;
  }
  Status err = MoveInto(Placement::kSystem, false, true);
  if (err == kOk) set_keep_own(true);
  return err;
}

Status BufferObject::MoveInto(Placement target, bool may_evict, bool own) {
  if (pin_count() > 0) return -EBUSY;
  // Every fence first, whatever its usage (rule S7b, as TTM orders a move after BOOKKEEP):
  // an explicit-sync writer may be tagged READ or BOOKKEEP and must land before the copy.
  if (resv_.WaitTimeout(ResvUsage::kBookkeep, move_wait_timeout_) != kOk) return -EBUSY;

  auto fresh = own ? mm_->AllocateOwnStorage(size_)
                   : mm_->AllocateStorage(target, size_, this, may_evict);
  if (!fresh) return fresh.status();

  // Importers first, as amdgpu and xe call move_notify before the copy (rule S5d): whoever
  // maps the old storage for CPU access drops that mapping now, so that no write through it
  // lands after the copy has read it. They are told the new placement and generation; a
  // move_notify must not map again (it would get the old storage: re-map lazily).
  placement_.store(target, std::memory_order_relaxed);
  vram_offset_.store(target == Placement::kDevice ? (*fresh)->offset() : kNoOffset,
                     std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_relaxed);
  if (auto dmabuf = exported()) (void)dmabuf->MoveNotify();

  // The copy reads memory: every device's dirty lines go there first, and no line may
  // survive that belongs to the old storage.
  uint8_t* old_mem = storage_->data();
  ForEachCache([old_mem](BufferCache& c) { c.WritebackAndDropAll(old_mem); });
  std::memcpy((*fresh)->data(), old_mem, size_);

  std::shared_ptr<Storage> old = std::exchange(storage_, std::move(fresh).value());
  moves_.fetch_add(1, std::memory_order_relaxed);
  mm_->CountMove();
  if (target == Placement::kDevice) {
    mm_->LruTouch(shared_from_this());
  } else {
    mm_->LruRemove(this);
  }
  RetireStorage(std::move(old));
  mm_->NotifyMoved(*this);
  return kOk;
}

// Move waits for every fence today, so `pending` is empty and `old` goes at once; the ghost
// path is what pipelined moves need once jobs complete asynchronously (issue 8).
void BufferObject::RetireStorage(std::shared_ptr<Storage> old) {
  std::vector<FenceRef> pending;
  for (FenceRef& f : resv_.Fences(ResvUsage::kBookkeep)) {
    if (!f->IsSignaled()) pending.push_back(std::move(f));
  }
  if (pending.empty()) return;  // `old` goes now (or with the last stale mapping)
  auto ghost = std::make_shared<Ghost>();
  ghost->storage = std::move(old);
  ghost->mm = mm_;
  ghost->remaining.store(pending.size(), std::memory_order_relaxed);
  mm_->GhostAdded();
  for (const FenceRef& f : pending) {
    if (f->AddCallback([ghost](const Fence&) { ghost->Release(); }) == -ENOENT) {
      ghost->Release();
    }
  }
}

Status BufferObject::PinPlacement() {
  if (!resv_.IsHeld()) return -ENOLCK;
  pin_count_.fetch_add(1, std::memory_order_relaxed);
  return kOk;
}

Status BufferObject::UnpinPlacement() {
  if (!resv_.IsHeld()) return -ENOLCK;
  unsigned count = pin_count();
  if (count == 0) {
    Logf(LogLevel::kDebug, "bo %s: unpin without a pin", name_.c_str());
    return -EINVAL;
  }
  pin_count_.store(count - 1, std::memory_order_relaxed);
  return kOk;
}

Status BufferObject::CacheFlush(uint64_t off, uint64_t len) {
  if (!resv_.IsHeld()) return -ENOLCK;
  if (len == 0) return -EINVAL;
  if (!RangeFits(off, len, size_)) return -ERANGE;
  cache_->Flush(storage_->data(), off, len);
  return kOk;
}

Status BufferObject::CacheInvalidate(uint64_t off, uint64_t len) {
  if (!resv_.IsHeld()) return -ENOLCK;
  if (len == 0) return -EINVAL;
  if (!RangeFits(off, len, size_)) return -ERANGE;
  cache_->Invalidate(storage_->data(), off, len);
  return kOk;
}

Status BufferObject::CpuBarrier(bool begin, DmaDirection dir) {
  // begin, any direction: device writes must reach memory before the CPU touches it
  // (flush) -- for a read so the CPU sees them, for a write so that no dirty line is left to
  // be written back over the CPU's bytes later (rule S4: begin is a two-way barrier);
  // end: the device must drop what it cached before the CPU wrote (invalidate).
  if (!begin && !DirCpuWrites(dir)) return kOk;
  LockPlain(resv_);
  uint8_t* mem = storage_->data();
  uint64_t size = size_;
  ForEachCache([&](BufferCache& c) {
    if (begin) {
      c.Flush(mem, 0, size);
    } else {
      c.Invalidate(mem, 0, size);
    }
  });
  resv_.Unlock();
  return kOk;
}

Status BufferObject::BeginCpuAccessUnlocked(DmaDirection dir) {
  if (resv_.IsHeld()) return -EDEADLK;
  if (auto dmabuf = exported()) return dmabuf->BeginCpuAccess(dir);
  if (Status err = resv_.WaitTimeout(UsageForAccess(DirCpuWrites(dir)), std::chrono::seconds(10))) {
    return err;
  }
  return CpuBarrier(true, dir);
}

Status BufferObject::EndCpuAccessUnlocked(DmaDirection dir) {
  if (resv_.IsHeld()) return -EDEADLK;
  if (auto dmabuf = exported()) return dmabuf->EndCpuAccess(dir);
  return CpuBarrier(false, dir);
}

Result<std::shared_ptr<DmaBuf>> BufferObject::GetOrExport() {
  if (foreign_) return Result<std::shared_ptr<DmaBuf>>::Error(-EPERM);
  std::lock_guard lock(dmabuf_mu_);
  if (auto existing = dmabuf_.lock()) return existing;
  auto dmabuf = DmaBuf::Export(shared_from_this(), resv_, name_);
  if (dmabuf) dmabuf_ = *dmabuf;
  return dmabuf;
}

std::shared_ptr<DmaBuf> BufferObject::exported() const {
  std::lock_guard lock(dmabuf_mu_);
  return dmabuf_.lock();
}

bool BufferObject::ReachableBy(const Attachment& attachment) const {
  return attachment.peer2peer() || attachment.importer().device == mm_.get();
}

Status BufferObject::Pin(Attachment& attachment) {
  // An importer that cannot reach our VRAM gets the buffer pinned in system memory.
  if (placement() == Placement::kDevice && !ReachableBy(attachment)) {
    if (Status err = Move(Placement::kSystem)) return err;
  }
  return PinPlacement();
}

void BufferObject::Unpin(Attachment& /*attachment*/) { (void)UnpinPlacement(); }

Result<SgTable> BufferObject::Map(Attachment& attachment, DmaDirection /*dir*/) {
  if (placement() == Placement::kDevice && !ReachableBy(attachment)) {
    // Moving to make the mapping possible invalidates everybody else's mappings; the core
    // keeps it from recursing into this importer (rule S5b).
    if (Status err = Move(Placement::kSystem)) return Result<SgTable>::Error(err);
  }
  if (placement() == Placement::kDevice) mm_->LruTouch(shared_from_this());
  // A completed write of the owning device is visible after a map (rule S4): its dirty lines
  // reach memory before the importer looks.
  cache_->Flush(storage_->data(), 0, size_);
  SgTable sgt;
  sgt.entries.push_back({storage_->fd(), storage_->offset(), size_, storage_->data()});
  sgt.keepalive = storage_;
  sgt.generation = generation();
  return sgt;
}

void BufferObject::Unmap(Attachment& /*attachment*/, const SgTable& /*sgt*/,
                         DmaDirection /*dir*/) {}

Status BufferObject::BeginCpuAccess(DmaBuf& /*dmabuf*/, DmaDirection dir) {
  return CpuBarrier(true, dir);
}

Status BufferObject::EndCpuAccess(DmaBuf& /*dmabuf*/, DmaDirection dir) {
  return CpuBarrier(false, dir);
}

Result<uint8_t*> BufferObject::Vmap() {
  // A kernel mapping lives until Vunmap, so the buffer must not move meanwhile.
  if (Status err = PinPlacement()) return Result<uint8_t*>::Error(err);
  exporter_vmaps_.fetch_add(1, std::memory_order_relaxed);
  return storage_->data();
}

void BufferObject::Vunmap(uint8_t* /*vaddr*/) { (void)UnpinPlacement(); }

Result<uint8_t*> BufferObject::VmapLocal() {
  if (!resv_.IsHeld()) return Result<uint8_t*>::Error(-ENOLCK);
  return storage_->data();
}

std::vector<CoherencyTracker::Report> BufferObject::NoteCoherency(const sgb_coherency_input& note,
                                                                  const std::vector<bool>& dirty) {
  std::lock_guard lock(coherency_mu_);
  return coherency_.Note(note, size_ / kPageSize, generation(), dirty);
}

}  // namespace sharegpu
