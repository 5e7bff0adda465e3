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

bool operator==(const sgb_uuid& a, const sgb_uuid& b) {
  return std::memcmp(a.bytes, b.bytes, sizeof(a.bytes)) == 0;
}

size_t UuidHash::operator()(const sgb_uuid& u) const {
  uint64_t h;
  std::memcpy(&h, u.bytes, sizeof(h));
  return static_cast<size_t>(h);
}

namespace {
Status RandomUuid(sgb_uuid* out) {
  if (getrandom(out->bytes, sizeof(out->bytes), 0) != sizeof(out->bytes)) return -EIO;
  out->bytes[6] = static_cast<uint8_t>((out->bytes[6] & 0x0f) | 0x40);  // version 4
  out->bytes[8] = static_cast<uint8_t>((out->bytes[8] & 0x3f) | 0x80);  // RFC 4122 variant
  return kOk;
}
}  // namespace

Status Backend::MakeIdentityLocked(ExportRecord& rec) {
  char name[64];
  std::snprintf(name, sizeof(name), "sharegpu-export-%02x%02x%02x%02x", rec.uuid.bytes[0],
                rec.uuid.bytes[1], rec.uuid.bytes[2], rec.uuid.bytes[3]);
  OwnedFd identity(memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!identity.valid()) return -errno;
  (void)fcntl(identity.get(), F_ADD_SEALS,
              F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
  struct stat st;
  if (fstat(identity.get(), &st) != 0) return -errno;
  rec.identity = std::move(identity);
  rec.st_dev = st.st_dev;
  rec.st_ino = st.st_ino;
  return kOk;
}

void Backend::Forget(const DmaBuf* dmabuf) {
  OwnedFd identity;  // closed after the lock is dropped
  std::lock_guard lock(mu_);
  auto it = exports_.find(dmabuf);
  if (it == exports_.end()) return;
  by_uuid_.erase(it->second.uuid);
  if (it->second.identity.valid()) by_inode_.erase({it->second.st_dev, it->second.st_ino});
  identity = std::move(it->second.identity);
  exports_.erase(it);
}

Status Backend::RegisterExport(const std::shared_ptr<DmaBuf>& dmabuf, sgb_uuid* uuid, int* fd) {
  if (!dmabuf) return -EINVAL;
  std::lock_guard lock(mu_);
  auto it = exports_.find(dmabuf.get());
  if (it == exports_.end()) {
    ExportRecord rec;
    rec.dmabuf = dmabuf;
    do {
      if (Status err = RandomUuid(&rec.uuid)) return err;
    } while (by_uuid_.count(rec.uuid));
    it = exports_.emplace(dmabuf.get(), std::move(rec)).first;
    by_uuid_.emplace(it->second.uuid, dmabuf.get());
    std::weak_ptr<Backend> weak = weak_from_this();
    dmabuf->SetReleaseHook([weak](const DmaBuf* gone) {
      if (auto backend = weak.lock()) backend->Forget(gone);
    });
  }
  ExportRecord& rec = it->second;
  if (uuid) *uuid = rec.uuid;
  if (fd) {
    if (!rec.identity.valid()) {
      if (Status err = MakeIdentityLocked(rec)) return err;
      by_inode_.emplace(std::make_pair(rec.st_dev, rec.st_ino), dmabuf.get());
    }
    auto dup = rec.identity.Dup();
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
  auto it = by_uuid_.find(uuid);
  if (it != by_uuid_.end()) {
    // The strong reference leaves with the return value, never dropped under mu_ (a last
    // reference dropped here would run the release hook, which takes mu_).
    if (auto dmabuf = exports_.at(it->second).dmabuf.lock()) return dmabuf;
  }
  return Result<std::shared_ptr<DmaBuf>>::Error(-ENOENT);
}

Result<std::shared_ptr<DmaBuf>> Backend::LookupFd(int fd) {
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) return Result<std::shared_ptr<DmaBuf>>::Error(-EBADF);
  std::lock_guard lock(mu_);
  auto it = by_inode_.find({st.st_dev, st.st_ino});
  if (it != by_inode_.end()) {
    if (auto dmabuf = exports_.at(it->second).dmabuf.lock()) return dmabuf;
  }
  return Result<std::shared_ptr<DmaBuf>>::Error(-ENOENT);
}

}  // namespace sharegpu
