#include "common/owned_fd.h"

#include <fcntl.h>

namespace sharegpu {

Result<OwnedFd> OwnedFd::Dup() const {
  if (fd_ < 0) return Result<OwnedFd>::Error(-EBADF);
  int fd = ::fcntl(fd_, F_DUPFD_CLOEXEC, 0);
  if (fd < 0) return Result<OwnedFd>::Error(-errno);
  return OwnedFd(fd);
}

}  // namespace sharegpu
