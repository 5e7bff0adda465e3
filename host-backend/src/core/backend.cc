#include "core/backend.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstring>

namespace sharegpu {

bool operator<(const sgb_uuid& a, const sgb_uuid& b) {
  return std::memcmp(a.bytes, b.bytes, sizeof(a.bytes)) < 0;
}

namespace {
Status RandomUuid(sgb_uuid* out) {
  if (getrandom(out->bytes, sizeof(out->bytes), 0) != sizeof(out->bytes)) return -EIO;
  out->bytes[6] = static_cast<uint8_t>((out->bytes[6] & 0x0f) | 0x40);  // version 4
  out->bytes[8] = static_cast<uint8_t>((out->bytes[8] & 0x3f) | 0x80);  // RFC 4122 variant
  return kOk;
}
}  // namespace

void Backend::PruneLocked() {
  for (auto it = exports_.begin(); it != exports_.end();) {
    it = it->second.dmabuf.expired() ? exports_.erase(it) : std::next(it);
  }
}

Status Backend::RegisterExport(const std::shared_ptr<DmaBuf>& dmabuf, sgb_uuid* uuid, int* fd) {
  if (!dmabuf) return -EINVAL;
  std::lock_guard lock(mu_);
  PruneLocked();
  auto it = exports_.find(dmabuf.get());
  if (it == exports_.end()) {
    ExportRecord rec;
    rec.dmabuf = dmabuf;
    if (Status err = RandomUuid(&rec.uuid)) return err;
    char name[64];
    std::snprintf(name, sizeof(name), "sharegpu-export-%02x%02x%02x%02x", rec.uuid.bytes[0],
                  rec.uuid.bytes[1], rec.uuid.bytes[2], rec.uuid.bytes[3]);
    rec.identity = OwnedFd(memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (!rec.identity.valid()) return -errno;
    (void)fcntl(rec.identity.get(), F_ADD_SEALS,
                F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
    struct stat st;
    if (fstat(rec.identity.get(), &st) != 0) return -errno;
    rec.st_dev = st.st_dev;
    rec.st_ino = st.st_ino;
    it = exports_.emplace(dmabuf.get(), std::move(rec)).first;
  }
  if (uuid) *uuid = it->second.uuid;
  if (fd) {
    auto dup = it->second.identity.Dup();
    if (!dup) return dup.status();
    *fd = dup->Release();
  }
  return kOk;
}

bool Backend::UuidOf(const DmaBuf* dmabuf, sgb_uuid* uuid) const {
  std::lock_guard lock(mu_);
  auto it = exports_.find(dmabuf);
  if (it == exports_.end() || it->second.dmabuf.expired()) return false;
  *uuid = it->second.uuid;
  return true;
}

Result<std::shared_ptr<DmaBuf>> Backend::LookupUuid(const sgb_uuid& uuid) {
  std::lock_guard lock(mu_);
  for (auto& [key, rec] : exports_) {
    if (std::memcmp(rec.uuid.bytes, uuid.bytes, sizeof(uuid.bytes)) != 0) continue;
    if (auto dmabuf = rec.dmabuf.lock()) return dmabuf;
  }
  return Result<std::shared_ptr<DmaBuf>>::Error(-ENOENT);
}

Result<std::shared_ptr<DmaBuf>> Backend::LookupFd(int fd) {
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) return Result<std::shared_ptr<DmaBuf>>::Error(-EBADF);
  std::lock_guard lock(mu_);
  for (auto& [key, rec] : exports_) {
    if (rec.st_dev != st.st_dev || rec.st_ino != st.st_ino) continue;
    if (auto dmabuf = rec.dmabuf.lock()) return dmabuf;
  }
  return Result<std::shared_ptr<DmaBuf>>::Error(-ENOENT);
}

}  // namespace sharegpu
