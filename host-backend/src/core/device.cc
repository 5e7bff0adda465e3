#include "core/device.h"

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "common/log.h"
#include "core/resv_guard.h"
#include "core/backend.h"
#include "engine/cpu_engine.h"
#include "mem/copy_engine.h"
#include "sync/exec.h"

namespace sharegpu {

namespace {
constexpr uint64_t kNoOffset = ~uint64_t{0};

BufferObject* ExporterBo(const DmaBuf& dmabuf) {
  return dynamic_cast<BufferObject*>(&dmabuf.exporter());
}

// BO_MOVED for a move of one of the device's own buffers (none once its handle is gone).
void OnLocalMove(DeviceEvents& events, BufferObject& bo) {
  uint32_t handle = bo.owner_handle.load();
  if (handle == 0) return;
  sgb_event ev{};
  ev.type = SGB_EVENT_BO_MOVED;
  ev.handle = handle;
  ev.placement = static_cast<uint32_t>(bo.placement());
  ev.vram_offset = bo.vram_offset();
  ev.generation = bo.generation();
  events.Push(ev);
}
}  // namespace

void DeviceEvents::Push(const sgb_event& ev) {
  std::lock_guard lock(mu_);
  if (events_.size() >= kMaxEvents) {
    events_.pop_front();  // the guest fell behind; the newest state matters most
    dropped++;
  }
  events_.push_back(ev);
  if (notify_fn_) notify_fn_(notify_opaque_);
}

Status DeviceEvents::Pop(sgb_event* out) {
  std::lock_guard lock(mu_);
  if (events_.empty()) return -EAGAIN;
  *out = events_.front();
  events_.pop_front();
  return kOk;
}

void DeviceEvents::Clear() {
  std::lock_guard lock(mu_);
  events_.clear();
}

void DeviceEvents::SetNotify(sgb_event_notify_fn fn, void* opaque) {
  std::lock_guard lock(mu_);
  notify_fn_ = fn;
  notify_opaque_ = opaque;
}

void DeviceEvents::Invalidating(uint32_t handle) {
  std::lock_guard lock(hook_mu_);
  if (hook_fn_ && handle != 0) hook_fn_(hook_opaque_, handle);
}

void DeviceEvents::SetInvalidateHook(sgb_invalidate_fn fn, void* opaque) {
  std::lock_guard lock(hook_mu_);
  hook_fn_ = fn;
  hook_opaque_ = opaque;
}

Result<std::shared_ptr<Device>> Device::Create(std::shared_ptr<Backend> backend,
                                               DeviceConfig config) {
  using R = Result<std::shared_ptr<Device>>;
  if (!backend) return R::Error(-EINVAL);
  if (config.vram_size < kMinVram || config.vram_size > kMaxVram ||
      !IsPageAligned(config.vram_size)) {
    Logf(LogLevel::kError, "device %s: vram size %llu outside [1 MiB, 16 GiB] or not paged",
         config.name.c_str(), static_cast<unsigned long long>(config.vram_size));
    return R::Error(-EINVAL);
  }
  if (config.name.empty()) config.name = "sharegpu";
  auto engine = CreateEngine(config.engine, config.name);
  if (!engine) return R::Error(engine.status());
  auto mm = MemoryManager::Create(config.name, config.vram_size, config.cache_mode,
                                  config.max_hostmem, (*engine)->cache_factory());
  if (!mm) return R::Error(mm.status());
  auto dev = std::make_shared<Device>(std::move(backend), std::move(config), std::move(mm).value(),
                                      std::move(engine).value());
  // The listener runs with the moved buffer's reservation and the listener lock held: it
  // holds the event queue, not the device (DeviceEvents).
  dev->mm_->SetMoveListener(
      [events = dev->events_](BufferObject& bo) { OnLocalMove(*events, bo); });
  return dev;
}

Device::Device(std::shared_ptr<Backend> backend, DeviceConfig config,
               std::shared_ptr<MemoryManager> mm, std::unique_ptr<Engine> engine)
    : backend_(std::move(backend)),
      config_(std::move(config)),
      mm_(std::move(mm)),
      timeline_("sharegpu:" + config_.name),
      engine_(std::move(engine)) {}

Device::~Device() {
  Shutdown();  // the jobs' done callbacks use this object
  mm_->SetMoveListener(nullptr);
  (void)Reset();
}

void Device::Shutdown() {
  // Not Release() first: that would let a stalled engine run the queued jobs; Stop() cancels
  // them and ends holds by itself.
  engine_->Stop();
}

Status Device::GuestError(Status err, const char* fmt, ...) const {
  char buf[384];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  Logf(LogLevel::kGuestError, "%s: %s: %s", config_.name.c_str(), buf, strerror(-err));
  return err;
}

Result<Device::Entry> Device::Lookup(uint32_t handle) const {
  std::lock_guard lock(table_mu_);
  auto it = table_.find(handle);
  if (it == table_.end()) {
    return Result<Entry>::Error(GuestError(-ENOENT, "unknown handle %u", handle));
  }
  return it->second;
}

uint32_t Device::InsertLocked(Entry entry) {
  while (next_handle_ == 0 || table_.count(next_handle_)) ++next_handle_;
  uint32_t handle = next_handle_++;
  if (entry.import) {
    import_handles_.emplace(entry.import->dmabuf.get(), handle);
  } else {
    ++bo_count_;
  }
  table_.emplace(handle, std::move(entry));
  return handle;
}

Device::Entry Device::EraseLocked(HandleTable::iterator it) {
  const uint32_t handle = it->first;
  Entry entry = std::move(it->second);
  table_.erase(it);
  if (entry.import) {
    auto idx = import_handles_.find(entry.import->dmabuf.get());
    if (idx != import_handles_.end() && idx->second == handle) import_handles_.erase(idx);
  } else {
    --bo_count_;
  }
  return entry;
}

ReservationObject& Device::ResvOf(const Entry& e) {
  return e.bo ? e.bo->resv() : e.import->dmabuf->resv();
}

Result<uint32_t> Device::CreateBo(uint64_t size, Placement placement, uint32_t flags) {
  if (size == 0) return Result<uint32_t>::Error(GuestError(-EINVAL, "bo create of size 0"));
  if (size > BufferObject::kMaxSize) {
    return Result<uint32_t>::Error(GuestError(-E2BIG, "bo create of %llu bytes",
                                              static_cast<unsigned long long>(size)));
  }
  if (placement != Placement::kDevice && placement != Placement::kSystem) {
    return Result<uint32_t>::Error(GuestError(-EINVAL, "bad placement %u", unsigned(placement)));
  }
  auto bo = BufferObject::Create(mm_, size, placement, NewBoName("bo"),
                                 !(flags & SGB_ALLOC_NO_EVICT));
  if (!bo) return Result<uint32_t>::Error(GuestError(bo.status(), "bo create failed"));
  return InsertLocal(*bo);
}

Result<uint32_t> Device::CreateForeignBo(int fd, uint64_t size, uint32_t flags) {
  using R = Result<uint32_t>;
  auto own_fd = OwnedFd::DupOf(fd);  // the caller's stays theirs
  if (!own_fd) return R::Error(GuestError(own_fd.status(), "foreign bo over fd %d", fd));
  auto bo = BufferObject::CreateForeign(mm_, std::move(own_fd).value(), size,
                                        flags & SGB_FOREIGN_WRITABLE, NewBoName("foreign"));
  if (!bo) {
    return R::Error(GuestError(bo.status(), "foreign bo of %llu bytes over fd %d",
                               static_cast<unsigned long long>(size), fd));
  }
  return InsertLocal(*bo);
}

std::string Device::NewBoName(const char* kind) const {
  char name[64];
  static std::atomic<uint64_t> serial{1};
  std::snprintf(name, sizeof(name), "%s/%s%llu", config_.name.c_str(), kind,
                static_cast<unsigned long long>(serial.fetch_add(1)));
  return name;
}

uint32_t Device::InsertLocal(const std::shared_ptr<BufferObject>& bo) {
  std::lock_guard lock(table_mu_);
  uint32_t handle = InsertLocked(Entry{bo, nullptr, nullptr});
  bo->owner_handle.store(handle);
  return handle;
}

Status Device::ReleaseImport(const std::shared_ptr<ImportRecord>& import) {
  {
    ResvGuard guard(import->dmabuf->resv());
    import->closed = true;
    for (; import->pins > 0; --import->pins) (void)import->dmabuf->Unpin(*import->attachment);
    if (import->mapping) {
      (void)import->dmabuf->Unmap(*import->attachment, import->mapping);
      import->mapping.reset();
    }
  }
  return import->dmabuf->Detach(import->attachment);
}

Status Device::DestroyBo(uint32_t handle) {
  Entry entry;
  {
    std::lock_guard lock(table_mu_);
    auto it = table_.find(handle);
    if (it == table_.end()) return GuestError(-ENOENT, "destroy of unknown handle %u", handle);
    entry = EraseLocked(it);
  }
  if (entry.import) {
    // This device's jobs still in flight through the import write into its attachment's
    // cache: the attachment (which every barrier and move reaches) and its mapping (whose
    // unmap writes the cache back) must outlive them, or their bytes never reach memory (rule
    // S4: no device-written byte is lost). The handle is gone already; wait for them, bounded
    // as begin_cpu_access is. (The QEMU device closes only with none of its jobs in flight.)
    std::vector<FenceRef> own;
    {
      ResvGuard guard(entry.import->dmabuf->resv());
      entry.import->closed = true;  // a job racing the close adds no fence and no mapping now
      for (FenceRef& f : entry.import->dmabuf->resv().Fences(ResvUsage::kBookkeep)) {
        if (f->context() == timeline_.context() && !f->IsSignaled()) own.push_back(std::move(f));
      }
    }
    for (const FenceRef& f : own) {
      if (f->Wait(std::chrono::seconds(10)) == -ETIME) {
        (void)GuestError(-ETIME, "close of import %u: its job %llu did not complete; its writes "
                         "may be lost", handle, static_cast<unsigned long long>(f->seqno()));
        break;
      }
    }
    return ReleaseImport(entry.import);
  }
  entry.bo->owner_handle.store(0);
  return kOk;  // the buffer lives on while an importer still holds its DmaBuf
}

Status Device::Reset() {
  HandleTable old;
  {
    std::lock_guard lock(table_mu_);
    old.swap(table_);
    import_handles_.clear();
    bo_count_ = 0;
    next_handle_ = 1;
  }
  for (auto& [handle, entry] : old) {
    if (entry.import) {
      (void)ReleaseImport(entry.import);
    } else {
      entry.bo->owner_handle.store(0);
    }
  }
  events_->Clear();
  return kOk;
}

Result<sgb_bo_state> Device::State(uint32_t handle) {
  auto entry = Lookup(handle);
  if (!entry) return Result<sgb_bo_state>::Error(entry.status());
  sgb_bo_state state{};
  state.handle = handle;
  BufferObject* bo = entry->bo ? entry->bo.get() : ExporterBo(*entry->import->dmabuf);
  std::shared_ptr<DmaBuf> dmabuf = entry->bo ? entry->bo->exported() : entry->import->dmabuf;
  ResvGuard guard(ResvOf(*entry));
  state.imported = entry->import ? 1 : 0;
  state.size = dmabuf ? dmabuf->size() : bo->size();
  state.vram_offset = kNoOffset;
  if (bo) {
    state.placement = static_cast<uint32_t>(bo->placement());
    state.pin_count = bo->pin_count();
    state.vram_offset = bo->vram_offset();
    state.generation = bo->generation();
  }
  if (dmabuf) {
    state.vmap_count = dmabuf->vmap_count();
    state.attachments = dmabuf->attachment_count();
    state.live_mappings = dmabuf->live_mapping_count();
    state.exported = backend_->UuidOf(dmabuf.get(), &state.uuid) ? 1 : 0;
  }
  return state;
}

Result<sgb_bo_debug_info> Device::DebugInfo(uint32_t handle) {
  auto state = State(handle);
  if (!state) return Result<sgb_bo_debug_info>::Error(state.status());
  auto entry = Lookup(handle);
  if (!entry) return Result<sgb_bo_debug_info>::Error(entry.status());
  sgb_bo_debug_info info{};
  info.state = *state;
  BufferObject* bo = entry->bo ? entry->bo.get() : ExporterBo(*entry->import->dmabuf);
  ReservationObject& resv = ResvOf(*entry);
  ResvGuard guard(resv);
  if (bo) {
    info.foreign = bo->foreign() ? 1 : 0;
    info.moves = bo->moves();
    std::snprintf(info.exporter, sizeof(info.exporter), "%s",
                  bo->memory_manager().name().c_str());
  }
  for (const FenceRef& f : resv.Fences(ResvUsage::kBookkeep)) info.fences_pending += !f->IsSignaled();
  DeviceCacheStats cs{};
  if (entry->bo) {
    cs = entry->bo->cache().stats();
  } else {
    cs = entry->import->attachment->cache().stats();
    info.invalidations = entry->import->status->invalidations.load();
  }
  info.cache_dirty_lines = static_cast<uint32_t>(cs.dirty_lines);
  info.cache_valid_lines = static_cast<uint32_t>(cs.valid_lines);
  return info;
}

Result<std::vector<sgb_coherency_report>> Device::NoteCoherency(const sgb_coherency_input& note) {
  using Out = Result<std::vector<sgb_coherency_report>>;
  if (note.op > SGB_COH_CHECK || note.dir > SGB_DIR_FROM_DEVICE) return Out::Error(-EINVAL);
  auto entry = Lookup(note.handle);
  if (!entry) return Out::Error(entry.status());
  BufferObject* bo = entry->bo ? entry->bo.get() : ExporterBo(*entry->import->dmabuf);
  if (!bo) return Out::Error(-ENOENT);
  uint64_t pages = bo->size() / kPageSize;
  std::vector<bool> dirty;
  if (note.dirty) {
    if (note.dirty_pages != pages) return Out::Error(-EINVAL);
    dirty.resize(pages);
    for (uint64_t p = 0; p < pages; ++p) dirty[p] = (note.dirty[p / 64] >> (p % 64)) & 1;
  }
  std::vector<sgb_coherency_report> out;
  for (const CoherencyTracker::Report& r : bo->NoteCoherency(note, dirty)) {
    sgb_coherency_report rep{};
    rep.kind = r.kind;
    rep.first_page = r.first_page;
    rep.last_page = r.last_page;
    rep.pages = r.pages;
    rep.history_len = static_cast<uint32_t>(std::min(r.history.size(), size_t{SGB_COH_HISTORY}));
    std::copy_n(r.history.begin(), rep.history_len, rep.history);
    rep.imported = entry->import != nullptr;
    if (rep.imported) {
      std::snprintf(rep.exporter, sizeof(rep.exporter), "%s", bo->memory_manager().name().c_str());
    }
    out.push_back(rep);
  }
  return out;
}

std::vector<sgb_bo_debug_info> Device::ListBos(size_t* count) {
  std::vector<uint32_t> handles;
  {
    std::lock_guard lock(table_mu_);
    for (const auto& [h, e] : table_) handles.push_back(h);
  }
  std::sort(handles.begin(), handles.end());
  std::vector<sgb_bo_debug_info> out;
  for (uint32_t h : handles) {
    auto info = DebugInfo(h);
    if (info) out.push_back(*info);
  }
  if (count) *count = out.size();
  return out;
}

Status Device::Move(uint32_t handle, Placement placement, uint32_t flags) {
  if (placement != Placement::kDevice && placement != Placement::kSystem) {
    return GuestError(-EINVAL, "move of handle %u to bad placement %u", handle,
                      unsigned(placement));
  }
  auto entry = Lookup(handle);
  if (!entry) return entry.status();
  BufferObject* bo = entry->bo ? entry->bo.get() : ExporterBo(*entry->import->dmabuf);
  if (!bo) return GuestError(-EOPNOTSUPP, "handle %u: exporter cannot move", handle);
  ResvGuard guard(bo->resv());
  Status err = bo->Move(placement, !(flags & SGB_ALLOC_NO_EVICT));
  if (err) return GuestError(err, "move of handle %u to %s", handle, PlacementName(placement));
  return kOk;
}

Status Device::OwnStorage(uint32_t handle, uint32_t flags) {
  auto entry = Lookup(handle);
  if (!entry) return entry.status();
  if (!entry->bo) return GuestError(-EINVAL, "storage of its own for import handle %u", handle);
  BufferObject& bo = *entry->bo;
  if (bo.foreign()) return GuestError(-EBUSY, "storage of its own for foreign handle %u", handle);
  ResvGuard guard(bo.resv());
  if (!(flags & SGB_OWN_KEEP)) {
    bo.set_keep_own(false);
    return kOk;
  }
  Status err = bo.MoveToOwnStorage(flags & SGB_OWN_RELOCATE);
  if (err) return GuestError(err, "move of handle %u into storage of its own", handle);
  return kOk;
}

Status Device::Pin(uint32_t handle) {
  auto entry = Lookup(handle);
  if (!entry) return entry.status();
  ResvGuard guard(ResvOf(*entry));
  if (entry->bo) return entry->bo->PinPlacement();
  ImportRecord& imp = *entry->import;
  if (imp.closed) return GuestError(-ENOENT, "pin of handle %u while it closes", handle);
  Status err = imp.dmabuf->Pin(*imp.attachment);
  if (err == kOk) ++imp.pins;
  return err;
}

Status Device::Unpin(uint32_t handle) {
  auto entry = Lookup(handle);
  if (!entry) return entry.status();
  ResvGuard guard(ResvOf(*entry));
  Status err;
  if (entry->bo) {
    err = entry->bo->UnpinPlacement();
  } else if (entry->import->pins == 0) {
    err = -EINVAL;  // each import unpins only what it pinned
  } else {
    err = entry->import->dmabuf->Unpin(*entry->import->attachment);
    if (err == kOk) --entry->import->pins;
  }
  if (err) return GuestError(err, "unpin of handle %u", handle);
  return kOk;
}

Status Device::CpuRead(uint32_t handle, uint64_t off, void* dst, uint64_t len) {
  auto entry = Lookup(handle);
  if (!entry) return entry.status();
  if (!dst) return -EINVAL;
  ResvGuard guard(ResvOf(*entry));
  // Imports are mapped short-term under the lock and never cached here (rule S3).
  Result<uint8_t*> mem = entry->bo ? entry->bo->VmapLocal() : entry->import->dmabuf->VmapLocal();
  if (!mem) return mem.status();
  uint64_t size = entry->bo ? entry->bo->size() : entry->import->dmabuf->size();
  if (!RangeFits(off, len, size)) return GuestError(-ERANGE, "cpu read beyond handle %u", handle);
  std::memcpy(dst, *mem + off, len);
  return kOk;
}

Status Device::CpuWrite(uint32_t handle, uint64_t off, const void* src, uint64_t len) {
  auto entry = Lookup(handle);
  if (!entry) return entry.status();
  if (!src) return -EINVAL;
  if (entry->bo && entry->bo->read_only()) {
    return GuestError(-EACCES, "cpu write into read-only foreign handle %u", handle);
  }
  ResvGuard guard(ResvOf(*entry));
  Result<uint8_t*> mem = entry->bo ? entry->bo->VmapLocal() : entry->import->dmabuf->VmapLocal();
  if (!mem) return mem.status();
  uint64_t size = entry->bo ? entry->bo->size() : entry->import->dmabuf->size();
  if (!RangeFits(off, len, size)) return GuestError(-ERANGE, "cpu write beyond handle %u", handle);
  std::memcpy(*mem + off, src, len);
  return kOk;
}

Status Device::BeginCpuAccess(uint32_t handle, DmaDirection dir) {
  auto entry = Lookup(handle);
  if (!entry) return entry.status();
  return entry->bo ? entry->bo->BeginCpuAccessUnlocked(dir)
                   : entry->import->dmabuf->BeginCpuAccess(dir);
}

Status Device::EndCpuAccess(uint32_t handle, DmaDirection dir) {
  auto entry = Lookup(handle);
  if (!entry) return entry.status();
  return entry->bo ? entry->bo->EndCpuAccessUnlocked(dir)
                   : entry->import->dmabuf->EndCpuAccess(dir);
}

Status Device::CacheFlush(uint32_t handle, uint64_t off, uint64_t len) {
  auto entry = Lookup(handle);
  if (!entry) return entry.status();
  ResvGuard guard(ResvOf(*entry));
  counters_.cache_flushes++;
  if (entry->bo) {
    Status err = entry->bo->CacheFlush(off, len);
    return err ? GuestError(err, "cache flush of handle %u", handle) : kOk;
  }
  ImportRecord& imp = *entry->import;
  if (len == 0 || !RangeFits(off, len, imp.dmabuf->size())) {
    return GuestError(len ? -ERANGE : -EINVAL, "cache flush of handle %u", handle);
  }
  if (imp.mapping && imp.mapping->valid()) imp.attachment->cache().Flush(imp.mapping->host(), off, len);
  return kOk;
}

Status Device::CacheInvalidate(uint32_t handle, uint64_t off, uint64_t len) {
  auto entry = Lookup(handle);
  if (!entry) return entry.status();
  ResvGuard guard(ResvOf(*entry));
  counters_.cache_invalidates++;
  if (entry->bo) {
    Status err = entry->bo->CacheInvalidate(off, len);
    return err ? GuestError(err, "cache invalidate of handle %u", handle) : kOk;
  }
  ImportRecord& imp = *entry->import;
  if (len == 0 || !RangeFits(off, len, imp.dmabuf->size())) {
    return GuestError(len ? -ERANGE : -EINVAL, "cache invalidate of handle %u", handle);
  }
  if (imp.mapping && imp.mapping->valid()) {
    imp.attachment->cache().Invalidate(imp.mapping->host(), off, len);
  }
  return kOk;
}

Result<DeviceView> Device::View(Entry& e) {
  if (e.bo) {
    if (e.bo->placement() == Placement::kDevice) mm_->LruTouch(e.bo);
    return e.bo->View();
  }
  ImportRecord& imp = *e.import;
  if (imp.closed) return Result<DeviceView>::Error(-ENOENT);  // closed since it was looked up
  if (!imp.mapping || !imp.mapping->valid()) {
    // Re-map lazily after a move_notify: the new mapping points at the new storage.
    if (imp.mapping) (void)imp.dmabuf->Unmap(*imp.attachment, imp.mapping);
    imp.mapping.reset();
    auto mapping = imp.dmabuf->Map(*imp.attachment, DmaDirection::kBidirectional);
    if (!mapping) return Result<DeviceView>::Error(mapping.status());
    imp.mapping = std::move(mapping).value();
  }
  return DeviceView{imp.mapping->host(), imp.dmabuf->size(), &imp.attachment->cache()};
}

Result<uint64_t> Device::Submit(const JobRequest& req, SubmitDone done) {
  using R = Result<uint64_t>;
  const size_t nbuf = req.op == JobOp::kCopy ? 2 : 1;
  if (req.op != JobOp::kCopy && req.op != JobOp::kFill && req.op != JobOp::kChecksum) {
    return R::Error(GuestError(-EINVAL, "job: unknown operation %u", unsigned(req.op)));
  }
  std::vector<Entry> entries;
  for (size_t i = 0; i < nbuf; ++i) {
    auto e = Lookup(i == 0 ? req.handle : req.handle2);
    if (!e) {
      counters_.job_errors++;
      return R::Error(e.status());
    }
    entries.push_back(*e);
  }
  // The written buffer is entries[0] (COPY's and FILL's destination). A read-only foreign one
  // is mapped PROT_READ: refused here, so that no job (nor its cache's write-back) stores there.
  if (req.op != JobOp::kChecksum && entries[0].bo && entries[0].bo->read_only()) {
    counters_.job_errors++;
    return R::Error(GuestError(-EACCES, "%s job into read-only foreign handle %u",
                               JobOpName(req.op), req.handle));
  }
  ExecContext exec(ExecFlags::kIgnoreDuplicates);
  Status err = exec.Run([&](ExecContext& x) -> Status {
    for (const Entry& e : entries) {
      if (Status lerr = x.Prepare(ResvOf(e), 1)) return lerr;
    }
    return kOk;
  });
  counters_.ww_backoffs += exec.retries();
  if (err) {
    counters_.job_errors++;
    return R::Error(err);
  }
  auto job = std::make_unique<Job>();
  job->op = req.op;
  job->off = req.off;
  job->off2 = req.off2;
  job->len = req.len;
  job->pattern = req.pattern;
  for (size_t i = 0; i < nbuf; ++i) {
    Entry& e = entries[i];
    auto view = View(e);
    if (!view) {
      counters_.job_errors++;
      return R::Error(GuestError(view.status(), "job: cannot map a buffer"));
    }
    JobBuffer b;
    b.view = *view;
    b.handle = i == 0 ? req.handle : req.handle2;
    b.write = i == 0 && req.op != JobOp::kChecksum;
    ReservationObject& resv = ResvOf(e);
    b.identity = &resv;
    if (e.bo) {
      b.keepalive = e.bo;
    } else {
      // The record, its attachment (view.cache) and the mapping (view.mem) as they are now: a
      // later invalidation or close of the import replaces them, the job keeps these.
      struct ImportKeep {
        std::shared_ptr<ImportRecord> record;
        AttachmentRef attachment;
        MappingRef mapping;
      };
      b.keepalive = std::make_shared<ImportKeep>(
          ImportKeep{e.import, e.import->attachment, e.import->mapping});
    }
    // Implicit sync: what the job must wait for (a write: readers and writers; a read:
    // writers). Our own earlier jobs complete before it anyway (one FIFO per engine).
    for (FenceRef& f : resv.Fences(UsageForAccess(b.write))) {
      if (f->context() != timeline_.context() && !f->IsSignaled()) {
        job->dependencies.push_back(std::move(f));
      }
    }
    job->buffers.push_back(std::move(b));
  }
  // Seqno order, queue order and the order fences enter the reservations must agree, or two
  // submitters could each queue a job behind one that waits for the other's (and fences on
  // one timeline must signal in seqno order): one submitter at a time, with every buffer of
  // the job still locked, gets its fence and queues it.
  std::lock_guard submit_lock(submit_mu_);
  FenceRef fence = timeline_.CreateFence();
  const uint64_t seqno = fence->seqno();
  for (size_t i = 0; i < nbuf; ++i) {
    ReservationObject& resv = ResvOf(entries[i]);
    (void)resv.ReserveFences(1);
    (void)resv.AddFence(fence, job->buffers[i].write ? ResvUsage::kWrite : ResvUsage::kRead);
  }
  job->fence = fence;
  const uint64_t bytes = req.op == JobOp::kCopy ? req.len : 0;
  job->done = [this, req, bytes, seqno, done = std::move(done)](Status status, uint64_t result) {
    if (status) {
      counters_.job_errors++;
      (void)GuestError(status, "%s job %llu: handle %u+%llu (handle2 %u+%llu) len %llu",
                       JobOpName(req.op), static_cast<unsigned long long>(seqno), req.handle,
                       static_cast<unsigned long long>(req.off), req.handle2,
                       static_cast<unsigned long long>(req.off2),
                       static_cast<unsigned long long>(req.len));
    } else {
      counters_.bytes_copied += bytes;
    }
    counters_.last_fence.store(seqno);
    if (done) done(seqno, status, result);
  };
  counters_.jobs++;
  counters_.fences_emitted++;
  if (Status serr = engine_->Submit(std::move(job))) {
    // Never queued: the fence is in the reservations already and must not stay pending.
    (void)fence->SignalWithError(serr);
    counters_.job_errors++;
    return R::Error(serr);
  }
  // exec's destructor unlocks: the job runs unlocked; moves and CPU accesses wait for its
  // fence instead.
  return seqno;
}

Result<uint64_t> Device::SubmitAndWait(const JobRequest& req, uint64_t* fence_out) {
  struct Outcome {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    Status status = kOk;
    uint64_t result = 0;
  };
  auto outcome = std::make_shared<Outcome>();
  auto seqno = Submit(req, [outcome](uint64_t, Status status, uint64_t result) {
    std::lock_guard lock(outcome->mu);
    outcome->done = true;
    outcome->status = status;
    outcome->result = result;
    outcome->cv.notify_all();
  });
  if (!seqno) return Result<uint64_t>::Error(seqno.status());
  if (fence_out) *fence_out = *seqno;
  std::unique_lock lock(outcome->mu);
  outcome->cv.wait(lock, [&] { return outcome->done; });
  if (outcome->status) return Result<uint64_t>::Error(outcome->status);
  return outcome->result;
}

Status Device::Copy(uint32_t src, uint64_t src_off, uint32_t dst, uint64_t dst_off, uint64_t len,
                    uint64_t* fence) {
  JobRequest req{JobOp::kCopy, dst, src, dst_off, src_off, len, 0};
  auto r = SubmitAndWait(req, fence);
  return r ? kOk : r.status();
}

Status Device::Fill(uint32_t dst, uint64_t off, uint64_t len, uint32_t pattern, uint64_t* fence) {
  JobRequest req{JobOp::kFill, dst, 0, off, 0, len, pattern};
  auto r = SubmitAndWait(req, fence);
  return r ? kOk : r.status();
}

Result<uint32_t> Device::Checksum(uint32_t src, uint64_t off, uint64_t len, uint64_t* fence) {
  JobRequest req{JobOp::kChecksum, src, 0, off, 0, len, 0};
  auto r = SubmitAndWait(req, fence);
  if (!r) return Result<uint32_t>::Error(r.status());
  return static_cast<uint32_t>(*r);
}

Status Device::AwaitIdle(uint32_t handle, AwaitFor what, std::function<void()> cb) {
  auto entry = Lookup(handle);
  if (!entry) return entry.status();
  const ResvUsage usage = what == AwaitFor::kPlacement ? ResvUsage::kBookkeep
                                                        : UsageForAccess(what == AwaitFor::kWrite);
  std::vector<FenceRef> pending;
  {
    ResvGuard guard(ResvOf(*entry));
    for (FenceRef& f : ResvOf(*entry).Fences(usage)) {
      if (!f->IsSignaled()) pending.push_back(std::move(f));
    }
  }
  if (pending.empty()) return 0;
  // One count per fence plus one for the registration itself, so that cb never runs from in
  // here: when every fence turned out signalled already, the caller hears "idle" instead.
  struct Countdown {
    std::atomic<size_t> left;
    std::function<void()> cb;
  };
  auto countdown = std::make_shared<Countdown>();
  countdown->left.store(pending.size() + 1);
  countdown->cb = std::move(cb);
  for (const FenceRef& f : pending) {
    auto fire = [countdown](const Fence&) {
      if (countdown->left.fetch_sub(1) == 1) countdown->cb();
    };
    if (f->AddCallback(fire) == -ENOENT) countdown->left.fetch_sub(1);
  }
  if (countdown->left.fetch_sub(1) == 1) return 0;
  return 1;
}

Status Device::HoldCompletions(uint32_t handle, std::chrono::milliseconds duration) {
  if (handle == 0) {
    engine_->HoldCompletions(nullptr, duration);
    return kOk;
  }
  auto entry = Lookup(handle);
  if (!entry) return entry.status();
  engine_->HoldCompletions(&ResvOf(*entry), duration);
  return kOk;
}

Status Device::Export(uint32_t handle, sgb_uuid* uuid, int* fd) {
  std::shared_ptr<DmaBuf> dmabuf;
  {
    auto entry = Lookup(handle);
    if (!entry) return entry.status();
    if (entry->import) {
      dmabuf = entry->import->dmabuf;  // re-export of an import names the same buffer
    } else {
      auto exported = entry->bo->GetOrExport();
      if (!exported) return exported.status();
      dmabuf = *exported;
      std::lock_guard lock(table_mu_);
      auto it = table_.find(handle);
      if (it != table_.end()) it->second.exported = dmabuf;
    }
  }
  Status err = backend_->RegisterExport(dmabuf, uuid, fd);
  if (!err) counters_.exports++;
  return err;
}

Result<uint32_t> Device::ImportDmaBuf(const std::shared_ptr<DmaBuf>& dmabuf) {
  BufferObject* exporter = ExporterBo(*dmabuf);
  {
    std::lock_guard lock(table_mu_);
    // Importing your own export gives the same object (drm_gem_prime_fd_to_handle).
    if (exporter && &exporter->memory_manager() == mm_.get()) {
      // A local buffer knows its handle here (0 once its handle is gone).
      if (uint32_t h = exporter->owner_handle.load()) {
        auto it = table_.find(h);
        if (it != table_.end() && it->second.bo.get() == exporter) return h;
      }
      auto self = std::static_pointer_cast<BufferObject>(exporter->shared_from_this());
      uint32_t h = InsertLocked(Entry{self, dmabuf, nullptr});
      self->owner_handle.store(h);
      return h;
    }
    auto it = import_handles_.find(dmabuf.get());
    if (it != import_handles_.end()) return it->second;  // one import per buffer
  }
  auto record = std::make_shared<ImportRecord>();
  record->dmabuf = dmabuf;
  ImporterOps ops;
  ops.name = config_.name;
  ops.device = mm_.get();
  ops.allow_peer2peer = true;  // sharegpu devices of one backend reach each other's VRAM
  ops.cache_mode = config_.cache_mode;
  ops.cache_factory = mm_->cache_factory();
  // Runs with the exporter's reservation held: it holds what it updates (the import's status,
  // the event queue), never the device or the record (DeviceEvents, ImportStatus).
  ops.move_notify = [status = record->status, events = events_](Attachment& attachment) {
    status->invalidations++;
    events->move_notifies++;
    sgb_event ev{};
    ev.type = SGB_EVENT_BO_INVALIDATED;
    ev.handle = status->handle.load();
    events->Invalidating(ev.handle);  // before the copy: the device drops its CPU mappings
    BufferObject* bo = ExporterBo(attachment.dmabuf());
    ev.placement = bo ? static_cast<uint32_t>(bo->placement()) : 0;
    ev.vram_offset = kNoOffset;
    ev.generation = bo ? bo->generation() : 0;
    events->Push(ev);
  };
  auto attachment = dmabuf->Attach(std::move(ops));
  if (!attachment) return Result<uint32_t>::Error(attachment.status());
  record->attachment = std::move(attachment).value();
  uint32_t handle = 0;
  {
    // Attach takes the reservation, so it ran outside table_mu_: look again, and insert in the
    // same step. An import of the same buffer that won the race is the one import; this
    // attachment goes (detached outside table_mu_).
    std::lock_guard lock(table_mu_);
    auto it = import_handles_.find(dmabuf.get());
    if (it != import_handles_.end()) {
      handle = it->second;
    } else {
      handle = InsertLocked(Entry{nullptr, nullptr, record});
      record->status->handle.store(handle);
      counters_.imports++;
      return handle;
    }
  }
  (void)ReleaseImport(record);
  return handle;
}

Status Device::StorageOf(uint32_t handle, int* memfd, uint64_t* offset, void** host,
                         uint64_t* size) {
  auto entry = Lookup(handle);
  if (!entry) return entry.status();
  ResvGuard guard(ResvOf(*entry));
  int fd;
  uint64_t off, sz;
  uint8_t* ptr;
  if (entry->bo) {
    const auto& storage = entry->bo->storage();
    fd = storage->fd();
    off = storage->offset();
    ptr = storage->data();
    sz = entry->bo->size();
  } else {
    auto view = View(*entry);
    if (!view) return view.status();
    const SgEntry& sg = entry->import->mapping->sgt().entries.at(0);
    fd = sg.memfd;
    off = sg.offset;
    ptr = sg.host;
    sz = sg.length;
  }
  if (memfd) *memfd = fd;
  if (offset) *offset = off;
  if (host) *host = ptr;
  if (size) *size = sz;
  return kOk;
}

void Device::SetInvalidateHook(sgb_invalidate_fn fn, void* opaque) {
  events_->SetInvalidateHook(fn, opaque);
}

void Device::SetEventNotify(sgb_event_notify_fn fn, void* opaque) {
  events_->SetNotify(fn, opaque);
}

Status Device::PopEvent(sgb_event* out) { return events_->Pop(out); }

sgb_device_stats Device::Stats() const {
  sgb_device_stats s{};
  s.vram_size = mm_->arena().size();
  s.vram_used = mm_->arena().used();
  {
    std::lock_guard lock(table_mu_);
    s.bo_count = bo_count_;
    s.import_count = static_cast<uint32_t>(import_handles_.size());
  }
  s.coherent = config_.cache_mode == CacheMode::kCoherent;
  MemoryStats ms = mm_->stats();
  s.evictions = ms.evictions;
  s.moves = ms.moves;
  s.hostmem_used = ms.hostmem_used;
  s.hostmem_limit = ms.hostmem_limit;
  s.jobs = counters_.jobs;
  s.job_errors = counters_.job_errors;
  s.bytes_copied = counters_.bytes_copied;
  s.exports = counters_.exports;
  s.imports = counters_.imports;
  s.move_notifies = events_->move_notifies;
  s.cache_flushes = counters_.cache_flushes;
  s.cache_invalidates = counters_.cache_invalidates;
  s.ww_backoffs = counters_.ww_backoffs;
  s.fences_emitted = counters_.fences_emitted;
  s.last_fence = counters_.last_fence;
  EngineStats es = engine_->stats();
  s.jobs_in_flight = es.in_flight;
  s.jobs_max_in_flight = es.max_in_flight;
  s.jobs_held = es.held;
  s.jobs_waited = es.waited_on_dependencies;
  const Engine::WatchPolls polls = engine_->watch_polls();
  s.engine_loop_polls = polls.loop;
  s.engine_fallback_polls = polls.fallback;
  return s;
}

}  // namespace sharegpu
