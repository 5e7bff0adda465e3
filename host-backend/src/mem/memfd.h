// Page-granular anonymous shared memory (memfd_create), sealed against shrinking so that a
// mapping can never SIGBUS because somebody truncated the file (udmabuf requires the same
// seal). The whole file is mapped once, MAP_SHARED, for the object's lifetime.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "common/owned_fd.h"
#include "common/status.h"

namespace sharegpu {

inline constexpr uint64_t kPageSize = 4096;
inline uint64_t PageAlignUp(uint64_t v) { return (v + kPageSize - 1) & ~(kPageSize - 1); }
inline bool IsPageAligned(uint64_t v) { return (v & (kPageSize - 1)) == 0; }

class Memfd {
 public:
  // size is rounded up to pages; 0 and sizes over kMaxSize are -EINVAL / -E2BIG.
  // Seals: F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL.
  static Result<std::unique_ptr<Memfd>> Create(const std::string& name, uint64_t size);
  static constexpr uint64_t kMaxSize = uint64_t{1} << 40;

  ~Memfd();
  Memfd(const Memfd&) = delete;
  Memfd& operator=(const Memfd&) = delete;

  int fd() const { return fd_.get(); }
  uint64_t size() const { return size_; }
  uint8_t* data() const { return data_; }
  Result<OwnedFd> DupFd() const { return fd_.Dup(); }

 private:
  Memfd(OwnedFd fd, uint64_t size, uint8_t* data) : fd_(std::move(fd)), size_(size), data_(data) {}
  OwnedFd fd_;
  uint64_t size_;
  uint8_t* data_;
};

}  // namespace sharegpu
