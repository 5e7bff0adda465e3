// The one owner of cross-device state: the export registry (UUID and fd identity of every
// exported buffer). Devices hold the backend; the backend holds devices only weakly.
// Lookups by buffer, UUID and descriptor are O(1) / O(log N); a record goes when its export
// ends (the DmaBuf's release hook), so nothing is ever scanned or pruned per call.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>

#include "common/owned_fd.h"
#include "common/status.h"
#include "common/thread_annotations.h"
#include "core/dma_buf.h"
#include "sharegpu/backend.h"

namespace sharegpu {

bool operator<(const sgb_uuid& a, const sgb_uuid& b);
bool operator==(const sgb_uuid& a, const sgb_uuid& b);
struct UuidHash {  // UUIDs are random: any 8 of their bytes are a good hash
  size_t operator()(const sgb_uuid& u) const;
};
struct UuidEq {
  bool operator()(const sgb_uuid& a, const sgb_uuid& b) const { return a == b; }
};
struct InodeHash {
  size_t operator()(const std::pair<dev_t, ino_t>& k) const {
    return std::hash<uint64_t>()(static_cast<uint64_t>(k.second) * 0x9e3779b97f4a7c15ull ^
                                 static_cast<uint64_t>(k.first));
  }
};

class Backend : public std::enable_shared_from_this<Backend> {
 public:
  static std::shared_ptr<Backend> Create() { return std::make_shared<Backend>(); }

  // Registers (once) an export: a random UUID and, the first time a descriptor is asked for
  // (fd non-null), an identity descriptor (a sealed, empty memfd named after the UUID) that
  // LookupFd recognises; *fd gets a dup of it. The identity descriptor is the only one the
  // backend holds for an export, and it is closed when the export ends: exports by UUID only
  // (what the QEMU device makes) hold none.
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
  Status MakeIdentityLocked(ExportRecord& rec) SGB_REQUIRES(mu_);
  void Forget(const DmaBuf* dmabuf);

  mutable std::mutex mu_;
  std::unordered_map<const DmaBuf*, ExportRecord> exports_ SGB_GUARDED_BY(mu_);
  std::unordered_map<sgb_uuid, const DmaBuf*, UuidHash, UuidEq> by_uuid_ SGB_GUARDED_BY(mu_);
  std::unordered_map<std::pair<dev_t, ino_t>, const DmaBuf*, InodeHash> by_inode_ SGB_GUARDED_BY(mu_);
};

}  // namespace sharegpu
