// The dma-buf core (the role of the Linux dma-buf core): one DmaBuf per exported buffer,
// shared by its exporter (through ExporterOps, the role of dma_buf_ops) and its importers
// (through Attachments). The core, not the drivers, owns:
//   - the lock rules (rule S1a): Pin/Unpin, Map/Unmap, Vmap/Vunmap, VmapLocal and MoveNotify
//     require the reservation held by the caller (-ENOLCK otherwise); Attach/Detach and
//     Begin/EndCpuAccess must not be called with it held (-EDEADLK: they take it themselves);
//   - the vmap refcount (rule S2): the exporter sees one Vmap however many users map;
//   - mapping tracking (rule S5a): every mapping an importer holds is known here, so a move
//     notifies exactly the dynamic attachments that have live mappings, once each, and an
//     invalidation caused by an importer's own Map never recurses into that importer.
// Ownership (acyclic): the importer owns its Attachment (the AttachmentRef Attach returns);
// an attachment holds the DmaBuf (the importer's reference, as an attachment's dma_buf file
// reference in Linux); a DmaBuf holds its exporter (shared_ptr<ExporterOps>). Back-references
// own nothing: the exporter's to its DmaBuf and the DmaBuf's list of attachments are weak, so
// an importer that drops an attachment still attached (a bug: it should Detach) leaks neither
// the attachment nor the buffer.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "mem/device_cache.h"
#include "sync/reservation.h"

namespace sharegpu {

enum class DmaDirection : uint8_t { kBidirectional = 0, kToDevice = 1, kFromDevice = 2 };
const char* DmaDirectionName(DmaDirection dir);
inline bool DirCpuReads(DmaDirection d) { return d != DmaDirection::kToDevice; }
inline bool DirCpuWrites(DmaDirection d) { return d != DmaDirection::kFromDevice; }

// One contiguous piece of a mapping: the memfd holding it, where, and the host address.
struct SgEntry {
  int memfd = -1;
  uint64_t offset = 0;
  uint64_t length = 0;
  uint8_t* host = nullptr;
};

// A mapping's scatter list. `keepalive` holds the storage it points into, so a stale
// mapping can never reach memory that was reused for another buffer.
struct SgTable {
  std::vector<SgEntry> entries;
  std::shared_ptr<const void> keepalive;
  uint64_t generation = 0;  // the exporter's storage generation at map time
};

class DmaBuf;
class Attachment;

// What an exporter implements (dma_buf_ops). The core calls Pin/Unpin/Map/Unmap/Vmap/
// Vunmap/VmapLocal with the reservation held, the others without it.
class ExporterOps {
 public:
  virtual ~ExporterOps() = default;
  virtual uint64_t size() const = 0;
  // Dynamic exporters can move their storage and so implement Pin (dma_buf_is_dynamic).
  virtual bool IsDynamic() const = 0;
  virtual Status OnAttach(Attachment&) { return kOk; }
  virtual void OnDetach(Attachment&) {}
  virtual Status Pin(Attachment& attachment) = 0;
  virtual void Unpin(Attachment& attachment) = 0;
  virtual Result<SgTable> Map(Attachment& attachment, DmaDirection dir) = 0;
  virtual void Unmap(Attachment& attachment, const SgTable& sgt, DmaDirection dir) = 0;
  virtual Status BeginCpuAccess(DmaBuf& dmabuf, DmaDirection dir) = 0;
  virtual Status EndCpuAccess(DmaBuf& dmabuf, DmaDirection dir) = 0;
  // Long-term kernel mapping: stays valid until Vunmap (exporters pin for it).
  virtual Result<uint8_t*> Vmap() = 0;
  virtual void Vunmap(uint8_t* vaddr) = 0;
  // Short-term mapping, valid only while the reservation stays held (rule S3).
  virtual Result<uint8_t*> VmapLocal() = 0;
};

// What an importer supplies (dma_buf_attach_ops). A dynamic importer has move_notify.
struct ImporterOps {
  std::string name;               // for logs and the monitor
  const void* device = nullptr;   // identity of the importing device
  bool allow_peer2peer = false;   // can reach the exporter's device memory directly
  CacheMode cache_mode = CacheMode::kCoherent;  // the importing device's cache model
  CacheFactory cache_factory;  // the importing device's kind of cache (empty: the model)
  // Called with the reservation held when the buffer moved while this attachment had live
  // mappings; those mappings are already invalid. May call DmaBuf::Unmap/Map.
  std::function<void(Attachment&)> move_notify;
};

// A mapping handed to an importer by DmaBuf::Map. Valid until invalidated by a move.
class Mapping {
 public:
  const SgTable& sgt() const { return sgt_; }
  DmaDirection dir() const { return dir_; }
  // Read under the reservation: false once a move invalidated it.
  bool valid() const { return valid_; }
  uint8_t* host() const { return sgt_.entries.empty() ? nullptr : sgt_.entries[0].host; }

 private:
  friend class DmaBuf;
  Mapping(SgTable sgt, DmaDirection dir) : sgt_(std::move(sgt)), dir_(dir) {}
  SgTable sgt_;
  DmaDirection dir_;
  bool valid_ = true;
};
using MappingRef = std::shared_ptr<Mapping>;

class Attachment {
 public:
  DmaBuf& dmabuf() const { return *dmabuf_; }
  std::shared_ptr<DmaBuf> dmabuf_ref() const { return dmabuf_; }
  const ImporterOps& importer() const { return importer_; }
  bool is_dynamic() const { return static_cast<bool>(importer_.move_notify); }
  bool peer2peer() const { return importer_.allow_peer2peer; }
  // The importing device's cache over this buffer.
  BufferCache& cache() { return *cache_; }
  // The exporter can tell whether a move it makes was caused by this attachment's own Map.
  bool mapping_in_progress() const { return mapping_in_progress_; }

  // Counters (read under the reservation, or racy for display).
  uint64_t move_notifies() const { return move_notifies_.load(std::memory_order_relaxed); }
  uint64_t self_invalidations() const {
    return self_invalidations_.load(std::memory_order_relaxed);
  }
  unsigned live_mappings() const;  // reservation held

  Attachment(std::shared_ptr<DmaBuf> dmabuf, ImporterOps importer);  // via DmaBuf::Attach
  // Takes no lock (it may run wherever the importer drops its last reference, even under the
  // reservation). Dropped still attached, its mappings go with it and its DmaBuf reference is
  // let go; a static attachment's pin stays with the exporter (logged: the importer's bug).
  ~Attachment();

 private:
  friend class DmaBuf;
  std::shared_ptr<DmaBuf> dmabuf_;
  ImporterOps importer_;
  const std::unique_ptr<BufferCache> cache_;
  std::vector<MappingRef> mappings_;  // guarded by the reservation
  MappingRef static_mapping_;         // static attachments: mapped once at attach (cached sgt)
  bool mapping_in_progress_ = false;
  bool attached_ = false;
  std::atomic<uint64_t> move_notifies_{0};
  std::atomic<uint64_t> self_invalidations_{0};
};
using AttachmentRef = std::shared_ptr<Attachment>;

class DmaBuf : public std::enable_shared_from_this<DmaBuf> {
 public:
  // dma_buf_export(): the DmaBuf shares the exporter's reservation object, which must
  // outlive it (the exporter owns it, and the DmaBuf owns the exporter).
  static Result<std::shared_ptr<DmaBuf>> Export(std::shared_ptr<ExporterOps> exporter,
                                                ReservationObject& resv, std::string name);

  // dma_buf_dynamic_attach(); static when importer.move_notify is empty: then, as in
  // the Linux dma-buf core, a dynamic exporter is pinned and the mapping is made once and cached.
  // Must not hold the reservation.
  Result<AttachmentRef> Attach(ImporterOps importer);
  // dma_buf_detach(). Must not hold the reservation. -EBUSY while a dynamic attachment still
  // has mappings (the importer unmaps first), -ENOENT when not attached here.
  Status Detach(const AttachmentRef& attachment);

  // Reservation held for all of these.
  Status Pin(Attachment& attachment);
  Status Unpin(Attachment& attachment);
  Result<MappingRef> Map(Attachment& attachment, DmaDirection dir);
  Status Unmap(Attachment& attachment, const MappingRef& mapping);
  // dma_buf_move_notify(): called by the exporter after its storage moved.
  Status MoveNotify();
  Result<uint8_t*> Vmap();
  Status Vunmap(uint8_t* vaddr);
  Result<uint8_t*> VmapLocal();

  // Without the reservation held: waits for the fences the access conflicts with, then
  // asks the exporter to make device caches coherent with the CPU.
  Status BeginCpuAccess(DmaDirection dir);
  Status EndCpuAccess(DmaDirection dir);

  ReservationObject& resv() const { return resv_; }
  ExporterOps& exporter() const { return *exporter_; }
  const std::string& name() const { return name_; }
  uint64_t size() const { return exporter_->size(); }

  // Reservation held: the live attachments (a snapshot). An attachment in it is attached while
  // the reservation stays held, so its importer still owns it: dropping the snapshot (under the
  // reservation) never drops an attachment's last reference, unless its importer dropped it
  // without detaching (~Attachment takes no lock, so even that is safe).
  std::vector<AttachmentRef> attachments() const;
  unsigned vmap_count() const { return vmap_count_.load(std::memory_order_relaxed); }
  unsigned attachment_count() const { return attachment_count_.load(std::memory_order_relaxed); }
  unsigned live_mapping_count() const;  // reservation held

  DmaBuf(std::shared_ptr<ExporterOps> exporter, ReservationObject& resv, std::string name);
  ~DmaBuf();
  DmaBuf(const DmaBuf&) = delete;
  DmaBuf& operator=(const DmaBuf&) = delete;

  // Runs once, from the destructor, when the export ends (the export registry forgets the
  // buffer and closes the descriptor it handed out for it). Set once, by the registry, while
  // a strong reference is held.
  void SetReleaseHook(std::function<void(const DmaBuf*)> hook) { release_hook_ = std::move(hook); }

 private:
  Status CheckHeld(const char* call) const;
  Status CheckNotHeld(const char* call) const;
  // Drops the entries of attachments their importers dropped without detaching (held).
  void PruneLocked();

  std::shared_ptr<ExporterOps> exporter_;
  ReservationObject& resv_;
  const std::string name_;
  // Non-owning (the importers own their attachments): an entry is added by Attach and removed
  // by Detach, or pruned once its attachment was dropped still attached. `raw` is identity
  // only, never dereferenced.
  struct AttachmentEntry {
    const Attachment* raw;
    std::weak_ptr<Attachment> ref;
  };
  std::vector<AttachmentEntry> attachments_;  // guarded by resv_
  uint8_t* vmap_ptr_ = nullptr;             // guarded by resv_
  std::atomic<unsigned> vmap_count_{0};     // written under resv_
  std::atomic<unsigned> attachment_count_{0};
  std::function<void(const DmaBuf*)> release_hook_;
};

}  // namespace sharegpu
