#include "common/owned_fd.h"

#include <fcntl.h>

namespace sharegpu {

Result<OwnedFd> OwnedFd::DupOf(int fd) {
  if (fd < 0) return Result<OwnedFd>::Error(-EBADF);
  int dup = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) return Result<OwnedFd>::Error(-errno);
  return OwnedFd(dup);
}

}  // namespace sharegpu
