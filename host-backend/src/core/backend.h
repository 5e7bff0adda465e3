// The one owner of cross-device state: the export registry (UUID and fd identity of every
// exported buffer). Devices hold the backend; the backend holds devices only weakly.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <mutex>

#include "common/owned_fd.h"
#include "common/status.h"
#include "common/thread_annotations.h"
#include "core/dma_buf.h"
#include "sharegpu/backend.h"

namespace sharegpu {

bool operator<(const sgb_uuid& a, const sgb_uuid& b);

class Backend : public std::enable_shared_from_this<Backend> {
 public:
  static std::shared_ptr<Backend> Create() { return std::make_shared<Backend>(); }

  // Registers (once) an export: a random UUID and an identity descriptor (a sealed, empty
  // memfd named after the UUID) that ImportFd recognises. *fd, when wanted, gets a dup.
  Status RegisterExport(const std::shared_ptr<DmaBuf>& dmabuf, sgb_uuid* uuid, int* fd);
  // The UUID of an export, if it is one.
  bool UuidOf(const DmaBuf* dmabuf, sgb_uuid* uuid) const;
  Result<std::shared_ptr<DmaBuf>> LookupUuid(const sgb_uuid& uuid);
  // -EBADF for a bad descriptor, -ENOENT for one that is not a live export of this backend.
  Result<std::shared_ptr<DmaBuf>> LookupFd(int fd);

 private:
  struct ExportRecord {
    std::weak_ptr<DmaBuf> dmabuf;
    sgb_uuid uuid;
    OwnedFd identity;
    dev_t st_dev = 0;
    ino_t st_ino = 0;
  };
  void PruneLocked() SGB_REQUIRES(mu_);

  mutable std::mutex mu_;
  std::map<const DmaBuf*, ExportRecord> exports_ SGB_GUARDED_BY(mu_);
};

}  // namespace sharegpu
