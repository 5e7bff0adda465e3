#include "mem/memfd.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/log.h"

namespace sharegpu {

Result<std::unique_ptr<Memfd>> Memfd::Create(const std::string& name, uint64_t size) {
  using R = Result<std::unique_ptr<Memfd>>;
  if (size == 0) return R::Error(-EINVAL);
  // Checked before rounding: PageAlignUp would wrap for sizes near UINT64_MAX.
  if (size > kMaxSize) return R::Error(-E2BIG);
  size = PageAlignUp(size);

  OwnedFd fd(::memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd.valid()) {
    Status err = -errno;
    Logf(LogLevel::kError, "memfd_create(%s): errno %d", name.c_str(), -err);
    return R::Error(err);
  }
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) return R::Error(-errno);
  // Sealed before mapping so that nobody can ever shrink the file under a live mapping.
  if (::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    return R::Error(-errno);
  }
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED) {
    Status err = -errno;
    Logf(LogLevel::kError, "mmap of memfd %s (%llu bytes): errno %d", name.c_str(),
         static_cast<unsigned long long>(size), -err);
    return R::Error(err);
  }
  return std::unique_ptr<Memfd>(new Memfd(std::move(fd), size, static_cast<uint8_t*>(p)));
}

Memfd::~Memfd() {
  if (data_ != nullptr) ::munmap(data_, size_);
}

}  // namespace sharegpu
