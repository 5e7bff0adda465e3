#include "core/dma_buf.h"

#include <algorithm>

#include "common/log.h"
#include "core/resv_guard.h"

namespace sharegpu {

const char* DmaDirectionName(DmaDirection dir) {
  switch (dir) {
    case DmaDirection::kBidirectional: return "bidirectional";
    case DmaDirection::kToDevice: return "to-device";
    case DmaDirection::kFromDevice: return "from-device";
  }
  return "?";
}

Attachment::Attachment(std::shared_ptr<DmaBuf> dmabuf, ImporterOps importer)
    : dmabuf_(std::move(dmabuf)),
      importer_(std::move(importer)),
      cache_(MakeCache(importer_.cache_factory, importer_.cache_mode)) {}

Attachment::~Attachment() {
  if (attached_) {
    Logf(LogLevel::kError, "dma-buf %s: attachment '%s' dropped without detach", dmabuf_->name().c_str(),
         importer_.name.c_str());
  }
}

unsigned Attachment::live_mappings() const {
  return static_cast<unsigned>(std::count_if(mappings_.begin(), mappings_.end(),
                                             [](const MappingRef& m) { return m->valid(); }));
}

DmaBuf::DmaBuf(std::shared_ptr<ExporterOps> exporter, ReservationObject& resv, std::string name)
    : exporter_(std::move(exporter)), resv_(resv), name_(std::move(name)) {}

DmaBuf::~DmaBuf() {
  if (release_hook_) release_hook_(this);
}

Result<std::shared_ptr<DmaBuf>> DmaBuf::Export(std::shared_ptr<ExporterOps> exporter,
                                               ReservationObject& resv, std::string name) {
  if (!exporter || exporter->size() == 0) return Result<std::shared_ptr<DmaBuf>>::Error(-EINVAL);
  return std::make_shared<DmaBuf>(std::move(exporter), resv, std::move(name));
}

Status DmaBuf::CheckHeld(const char* call) const {
  if (resv_.IsHeld()) return kOk;
  Logf(LogLevel::kError, "dma-buf %s: %s requires the reservation lock held", name_.c_str(),
       call);
  return -ENOLCK;
}

Status DmaBuf::CheckNotHeld(const char* call) const {
  if (!resv_.IsHeld()) return kOk;
  Logf(LogLevel::kError, "dma-buf %s: %s must not be called with the reservation lock held",
       name_.c_str(), call);
  return -EDEADLK;
}

Result<AttachmentRef> DmaBuf::Attach(ImporterOps importer) {
  using R = Result<AttachmentRef>;
  if (Status err = CheckNotHeld("attach")) return R::Error(err);
  auto attachment = std::make_shared<Attachment>(shared_from_this(), std::move(importer));
  if (Status err = exporter_->OnAttach(*attachment)) return R::Error(err);

  LockPlain(resv_);
  PruneLocked();
  attachments_.push_back({attachment.get(), attachment});
  attachment->attached_ = true;
  attachment_count_.fetch_add(1, std::memory_order_relaxed);
  Status err = kOk;
  // As the Linux dma-buf core: when importer and exporter disagree on dynamic-ness, pin and cache the
  // mapping now so the importer never needs the reservation later.
  if (!attachment->is_dynamic()) {
    if (exporter_->IsDynamic()) err = Pin(*attachment);
    if (!err) {
      auto mapping = Map(*attachment, DmaDirection::kBidirectional);
      if (mapping) {
        attachment->static_mapping_ = std::move(mapping).value();
      } else {
        err = mapping.status();
        if (exporter_->IsDynamic()) (void)Unpin(*attachment);
      }
    }
  }
  if (err) {
    attachments_.pop_back();
    attachment->attached_ = false;
    attachment_count_.fetch_sub(1, std::memory_order_relaxed);
  }
  resv_.Unlock();
  if (err) {
    exporter_->OnDetach(*attachment);
    return R::Error(err);
  }
  return attachment;
}

Status DmaBuf::Detach(const AttachmentRef& attachment) {
  if (Status err = CheckNotHeld("detach")) return err;
  if (!attachment || &attachment->dmabuf() != this) return -EINVAL;
  LockPlain(resv_);
  PruneLocked();
  auto is_this = [&](const AttachmentEntry& e) { return e.raw == attachment.get(); };
  if (std::find_if(attachments_.begin(), attachments_.end(), is_this) == attachments_.end()) {
    resv_.Unlock();
    return -ENOENT;
  }
  if (attachment->is_dynamic() && !attachment->mappings_.empty()) {
    resv_.Unlock();
    Logf(LogLevel::kError, "dma-buf %s: detach of '%s' with %zu mapping(s) still held",
         name_.c_str(), attachment->importer().name.c_str(), attachment->mappings_.size());
    return -EBUSY;
  }
  if (attachment->static_mapping_) {
    // Un-cache first: Unmap treats the cached mapping as a no-op while it is cached, and the
    // exporter must see its Map balanced by an Unmap.
    MappingRef mapping = std::move(attachment->static_mapping_);
    attachment->static_mapping_.reset();
    (void)Unmap(*attachment, mapping);
    if (exporter_->IsDynamic()) (void)Unpin(*attachment);
  }
  // Looked up again: the exporter's Unmap/Unpin may have changed the list.
  attachments_.erase(std::remove_if(attachments_.begin(), attachments_.end(), is_this),
                     attachments_.end());
  attachment->attached_ = false;
  attachment_count_.fetch_sub(1, std::memory_order_relaxed);
  resv_.Unlock();
  exporter_->OnDetach(*attachment);
  return kOk;
}

Status DmaBuf::Pin(Attachment& attachment) {
  if (Status err = CheckHeld("pin")) return err;
  if (!attachment.attached_) return -ENOENT;
  return exporter_->IsDynamic() ? exporter_->Pin(attachment) : kOk;
}

Status DmaBuf::Unpin(Attachment& attachment) {
  if (Status err = CheckHeld("unpin")) return err;
  if (!attachment.attached_) return -ENOENT;
  if (exporter_->IsDynamic()) exporter_->Unpin(attachment);
  return kOk;
}

Result<MappingRef> DmaBuf::Map(Attachment& attachment, DmaDirection dir) {
  using R = Result<MappingRef>;
  if (Status err = CheckHeld("map_attachment")) return R::Error(err);
  if (!attachment.attached_) return R::Error(-ENOENT);
  if (attachment.static_mapping_) {
    // Cached mapping of a static attachment; two directions cannot share it.
    if (attachment.static_mapping_->dir() != dir &&
        attachment.static_mapping_->dir() != DmaDirection::kBidirectional) {
      return R::Error(-EBUSY);
    }
    return attachment.static_mapping_;
  }
  // A move the exporter makes to satisfy this Map must not notify this importer (rule S5b):
  // its mapping does not exist yet, it is being created.
  attachment.mapping_in_progress_ = true;
  Result<SgTable> sgt = exporter_->Map(attachment, dir);
  attachment.mapping_in_progress_ = false;
  if (!sgt) return R::Error(sgt.status());
  MappingRef mapping(new Mapping(std::move(sgt).value(), dir));
  attachment.mappings_.push_back(mapping);
  // Map is a barrier (rule S4): the device must not see lines cached before it.
  for (const SgEntry& e : mapping->sgt().entries) {
    attachment.cache().Invalidate(e.host, 0, e.length);
  }
  return mapping;
}

Status DmaBuf::Unmap(Attachment& attachment, const MappingRef& mapping) {
  if (Status err = CheckHeld("unmap_attachment")) return err;
  if (!mapping) return -EINVAL;
  if (mapping == attachment.static_mapping_ && attachment.attached_) {
    return kOk;  // cached for the attachment's lifetime, released by Detach
  }
  auto it = std::find(attachment.mappings_.begin(), attachment.mappings_.end(), mapping);
  if (it == attachment.mappings_.end()) {
    Logf(LogLevel::kError, "dma-buf %s: unmap of a mapping '%s' does not hold", name_.c_str(),
         attachment.importer().name.c_str());
    return -ENOENT;
  }
  // Unmap is a barrier too: what the device wrote reaches memory. An invalidated mapping's
  // lines were already written back when the buffer moved.
  if (mapping->valid()) {
    for (const SgEntry& e : mapping->sgt().entries) attachment.cache().Flush(e.host, 0, e.length);
  }
  attachment.mappings_.erase(it);
  exporter_->Unmap(attachment, mapping->sgt(), mapping->dir());
  return kOk;
}

void DmaBuf::PruneLocked() {
  auto live_end = std::remove_if(attachments_.begin(), attachments_.end(),
                                 [](const AttachmentEntry& e) { return e.ref.expired(); });
  attachment_count_.fetch_sub(static_cast<unsigned>(attachments_.end() - live_end),
                              std::memory_order_relaxed);
  attachments_.erase(live_end, attachments_.end());
}

Status DmaBuf::MoveNotify() {
  if (Status err = CheckHeld("move_notify")) return err;
  PruneLocked();
  // A snapshot: move_notify may Unmap/Map, and an attachment stays attached (so owned by its
  // importer) while the reservation is held.
  for (const AttachmentRef& attachment : attachments()) {
    if (!attachment->is_dynamic()) continue;  // static attachments pin: nothing moved for them
    bool live = false;
    for (const MappingRef& m : attachment->mappings_) {
      live |= m->valid_;
      m->valid_ = false;
    }
    if (attachment->mapping_in_progress_) {
      // The importer's own Map caused this move; the mapping being created gets the new
      // storage from that Map, so it needs no notification (counted even when the importer
      // holds no other mapping - the usual case: an importer that cannot reach VRAM has no
      // live mapping of a buffer that sits there). Only that recursion is suppressed: other
      // live mappings of the importer just went stale and it is told below (rule S5b).
      attachment->self_invalidations_.fetch_add(1, std::memory_order_relaxed);
    }
    if (!live) continue;  // nothing mapped, nothing to tell (rule S5a: the core tracks mappings)
    attachment->move_notifies_.fetch_add(1, std::memory_order_relaxed);
    attachment->importer_.move_notify(*attachment);
  }
  return kOk;
}

Result<uint8_t*> DmaBuf::Vmap() {
  using R = Result<uint8_t*>;
  if (Status err = CheckHeld("vmap")) return R::Error(err);
  if (vmap_count_.load(std::memory_order_relaxed) > 0) {
    vmap_count_.fetch_add(1, std::memory_order_relaxed);
    return vmap_ptr_;
  }
  Result<uint8_t*> vaddr = exporter_->Vmap();
  if (!vaddr) return vaddr;
  vmap_ptr_ = *vaddr;
  vmap_count_.store(1, std::memory_order_relaxed);
  return vmap_ptr_;
}

Status DmaBuf::Vunmap(uint8_t* vaddr) {
  if (Status err = CheckHeld("vunmap")) return err;
  if (vmap_count_.load(std::memory_order_relaxed) == 0 || vaddr != vmap_ptr_) {
    Logf(LogLevel::kError, "dma-buf %s: vunmap of an address that is not mapped", name_.c_str());
    return -EINVAL;
  }
  if (vmap_count_.fetch_sub(1, std::memory_order_relaxed) == 1) {
    exporter_->Vunmap(vmap_ptr_);
    vmap_ptr_ = nullptr;
  }
  return kOk;
}

Result<uint8_t*> DmaBuf::VmapLocal() {
  if (Status err = CheckHeld("vmap_local")) return Result<uint8_t*>::Error(err);
  return exporter_->VmapLocal();
}

Status DmaBuf::BeginCpuAccess(DmaDirection dir) {
  if (Status err = CheckNotHeld("begin_cpu_access")) return err;
  // Implicit sync: a CPU read waits for device writers, a CPU write for everybody.
  if (Status err = resv_.WaitTimeout(UsageForAccess(DirCpuWrites(dir)), std::chrono::seconds(10))) {
    return err;
  }
  return exporter_->BeginCpuAccess(*this, dir);
}

Status DmaBuf::EndCpuAccess(DmaDirection dir) {
  if (Status err = CheckNotHeld("end_cpu_access")) return err;
  return exporter_->EndCpuAccess(*this, dir);
}

std::vector<AttachmentRef> DmaBuf::attachments() const {
  std::vector<AttachmentRef> out;
  if (!resv_.IsHeld()) return out;
  for (const AttachmentEntry& e : attachments_) {
    if (AttachmentRef a = e.ref.lock()) out.push_back(std::move(a));
  }
  return out;
}

unsigned DmaBuf::live_mapping_count() const {
  unsigned n = 0;
  for (const AttachmentRef& a : attachments()) n += a->live_mappings();
  return n;
}

}  // namespace sharegpu
