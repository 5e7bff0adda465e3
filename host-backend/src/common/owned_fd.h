// An owned file descriptor (crosvm's SafeDescriptor): closed exactly once, movable, never
// copied implicitly.
#pragma once

#include <unistd.h>

#include <utility>

#include "common/status.h"

namespace sharegpu {

class OwnedFd {
 public:
  OwnedFd() = default;
  explicit OwnedFd(int fd) : fd_(fd) {}
  ~OwnedFd() { Reset(); }
  OwnedFd(OwnedFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  OwnedFd& operator=(OwnedFd&& other) noexcept {
    if (this != &other) {
      Reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  OwnedFd(const OwnedFd&) = delete;
  OwnedFd& operator=(const OwnedFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  // Gives up ownership; the caller closes it.
  int Release() { return std::exchange(fd_, -1); }
  void Reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  // A new descriptor (close-on-exec) for the same open file.
  Result<OwnedFd> Dup() const { return DupOf(fd_); }
  // The same for a descriptor somebody else owns (borrowed: left open); -EBADF if not open.
  static Result<OwnedFd> DupOf(int fd);

 private:
  int fd_ = -1;
};

}  // namespace sharegpu
