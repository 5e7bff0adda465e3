// The device's VRAM: one memfd of fixed size that the QEMU device maps into its BAR as a
// single RAM region; buffer objects placed in DEVICE memory are page-aligned sub-ranges of it.
// A first-fit free-list allocator with coalescing; thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>

#include "common/status.h"
#include "common/thread_annotations.h"
#include "mem/memfd.h"
#include "mem/system_pool.h"

namespace sharegpu {

struct ArenaRange {
  uint64_t offset = 0;
  uint64_t size = 0;
};

class Arena {
 public:
  static Result<std::unique_ptr<Arena>> Create(const std::string& name, uint64_t size);

  // A page-aligned range of PageAlignUp(size) bytes; -ENOSPC when no free range fits (the
  // caller evicts and retries), -EINVAL for 0, -E2BIG when larger than the arena.
  Result<ArenaRange> Allocate(uint64_t size);
  // Returns a range obtained from Allocate. Unknown ranges are logged and ignored.
  void Free(ArenaRange range);

  const Memfd& memfd() const { return *memfd_; }
  uint8_t* data() const { return memfd_->data(); }
  uint64_t size() const { return memfd_->size(); }
  uint64_t used() const;
  uint64_t largest_free() const;

 private:
  explicit Arena(std::unique_ptr<Memfd> memfd);
  std::unique_ptr<Memfd> memfd_;
  mutable std::mutex mu_;
  std::map<uint64_t, uint64_t> free_ SGB_GUARDED_BY(mu_);       // offset -> size
  std::map<uint64_t, uint64_t> allocated_ SGB_GUARDED_BY(mu_);  // offset -> size
  uint64_t used_ SGB_GUARDED_BY(mu_) = 0;
};

enum class Placement : uint8_t { kDevice = 0, kSystem = 1 };
const char* PlacementName(Placement placement);

// The pages a buffer object's contents live in right now: a DEVICE range of an arena, a
// SYSTEM range of a device's system pool, a SYSTEM memfd of its own (tests, benchmarks), or
// a file another process owns (foreign: a cross-VM remote import, docs/broker.md).
// Freeing is RAII: the destructor returns the arena or pool range, or unmaps and closes what
// it owns. Shared (std::shared_ptr) so that a move can keep the old storage alive until
// fences and mappings that still reference it are gone.
class Storage {
 public:
  static Result<std::shared_ptr<Storage>> CreateDevice(Arena& arena, uint64_t size);
  // A range of `pool` (which must outlive the storage): what device buffers use.
  static Result<std::shared_ptr<Storage>> CreatePooled(SystemPool& pool, uint64_t size);
  // A memfd of its own (one descriptor per storage: for tests and benchmarks).
  static Result<std::shared_ptr<Storage>> CreateSystem(const std::string& name, uint64_t size);
  // Bytes [0, size) of a file another process owns, mapped MAP_SHARED once (read-write when
  // `writable`, else read-only); takes `fd` (the storage closes it). size: a page multiple, 1
  // page .. the file's size (-EINVAL otherwise); -EBADF when fd is not a regular file (a
  // memfd, a tmpfs file); -EACCES when the descriptor does not allow the mapping (writable
  // over one not open for writing or write-sealed). Placement SYSTEM, never charged anywhere.
  static Result<std::shared_ptr<Storage>> CreateForeign(OwnedFd fd, uint64_t size,
                                                        bool writable);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  Placement placement() const { return placement_; }
  // The requested size rounded up to whole pages (the cache model and mmap work in pages).
  uint64_t size() const { return size_; }
  uint8_t* data() const { return data_; }
  // The memfd holding the pages (borrowed: the arena's, the pool's or its own) and the pages'
  // offset in it (page-aligned).
  int fd() const { return fd_; }
  uint64_t offset() const { return offset_; }
  // SYSTEM storage in a memfd of its own (CreateSystem): fd() holds exactly these pages.
  bool own() const { return own_ != nullptr; }
  // Pages another process owns (CreateForeign); fd() is the storage's own duplicate.
  bool foreign() const { return foreign_ != nullptr; }
  // False only for a read-only foreign mapping: nothing may write data() then (SIGSEGV).
  bool writable() const { return foreign_ == nullptr || foreign_->writable; }

 private:
  // The descriptor and the one mapping of a foreign storage, released together.
  struct ForeignPages {
    OwnedFd fd;
    uint8_t* data = nullptr;
    uint64_t size = 0;
    bool writable = false;
    ~ForeignPages();
  };

  Storage(Placement placement, uint64_t size, uint8_t* data, uint64_t offset, int fd);
  Placement placement_;
  uint64_t size_;
  uint8_t* data_;
  uint64_t offset_;
  int fd_;
  Arena* arena_ = nullptr;      // DEVICE: where to free; must outlive the storage
  SystemPool* pool_ = nullptr;  // SYSTEM in a pool: likewise
  std::unique_ptr<Memfd> own_;  // SYSTEM of its own
  std::unique_ptr<ForeignPages> foreign_;  // SYSTEM, another process's pages
};

}  // namespace sharegpu
