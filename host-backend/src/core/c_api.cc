// The extern "C" face of the backend. Each entry point validates its arguments, calls into
// the C++ objects and converts the outcome to an errno; a catch-all keeps any exception
// (std::bad_alloc, in practice) from crossing into C.
#include <dirent.h>

#include <cstdio>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>

#include "common/log.h"
#include "core/backend.h"
#include "core/device.h"
#include "sharegpu/backend.h"
#include "sharegpu/backend-testing.h"

struct sgb_backend {
  std::shared_ptr<sharegpu::Backend> impl;
  std::atomic<int> refs{1};
};

struct sgb_device {
  std::shared_ptr<sharegpu::Device> impl;
  sgb_backend* backend;
};

namespace {

using sharegpu::DmaDirection;
using sharegpu::Placement;
using sharegpu::Status;

template <class F>
int Guard(F&& f) noexcept {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return -ENOMEM;
  } catch (...) {
    sharegpu::Logf(sharegpu::LogLevel::kError, "unexpected exception at the C API boundary");
    return -EIO;
  }
}

bool ValidPlacement(uint32_t p) { return p == SGB_PLACEMENT_DEVICE || p == SGB_PLACEMENT_SYSTEM; }
bool ValidDir(uint32_t d) { return d <= SGB_DIR_FROM_DEVICE; }
constexpr uint32_t kAllocFlags = SGB_ALLOC_NO_EVICT;

std::mutex g_shared_mu;
sgb_backend* g_shared = nullptr;  // not owning: cleared by the last unref

sgb_log_fn g_log_fn = nullptr;
void* g_log_opaque = nullptr;
void ForwardLog(void*, sharegpu::LogLevel level, const char* msg) {
  if (g_log_fn) g_log_fn(g_log_opaque, static_cast<sgb_log_level>(level), msg);
}

}  // namespace

extern "C" {

void sgb_set_log_handler(sgb_log_fn fn, void* opaque) {
  g_log_fn = fn;
  g_log_opaque = opaque;
  sharegpu::SetLogSink(fn ? ForwardLog : nullptr, nullptr);
}

const char* sgb_strerror(int err) {
  switch (err) {
    case 0: return "success";
    case -ENOENT: return "no such handle or export";
    case -ERANGE: return "range outside the buffer";
    case -EINVAL: return "invalid argument";
    case -E2BIG: return "size too large";
    case -ENOSPC: return "out of device memory or host memory budget";
    case -EBUSY: return "buffer busy (pinned or in use)";
    case -EDEADLK: return "would deadlock (reservation held)";
    case -ENOLCK: return "reservation lock not held";
    case -EALREADY: return "lock already held by this context";
    case -ETIME: return "timed out waiting for fences";
    case -EBADF: return "bad file descriptor";
    case -ENOMEM: return "out of memory";
    case -EAGAIN: return "nothing available";
    default: return strerror(-err);
  }
}

int sgb_backend_new(sgb_backend** out) {
  if (!out) return -EINVAL;
  return Guard([&] {
    auto* b = new sgb_backend;
    b->impl = sharegpu::Backend::Create();
    *out = b;
    return 0;
  });
}

sgb_backend* sgb_backend_ref(sgb_backend* backend) {
  if (backend) backend->refs.fetch_add(1);
  return backend;
}

void sgb_backend_unref(sgb_backend* backend) {
  if (!backend) return;
  std::lock_guard lock(g_shared_mu);
  if (backend->refs.fetch_sub(1) == 1) {
    if (backend == g_shared) g_shared = nullptr;
    delete backend;
  }
}

int sgb_backend_get_shared(sgb_backend** out) {
  if (!out) return -EINVAL;
  std::lock_guard lock(g_shared_mu);
  if (g_shared) {
    *out = sgb_backend_ref(g_shared);
    return 0;
  }
  int err = sgb_backend_new(&g_shared);
  if (err) return err;
  *out = g_shared;
  return 0;
}

int sgb_device_create(sgb_backend* backend, const sgb_device_config* config, sgb_device** out) {
  if (!backend || !config || !out) return -EINVAL;
  return Guard([&] {
    sharegpu::DeviceConfig cfg;
    cfg.name = config->name ? config->name : "sharegpu";
    cfg.vram_size = config->vram_size;
    cfg.cache_mode = config->coherent ? sharegpu::CacheMode::kCoherent : sharegpu::CacheMode::kStrict;
    cfg.max_hostmem = config->max_hostmem;
    cfg.engine = config->engine ? config->engine : "cpu";
    auto dev = sharegpu::Device::Create(backend->impl, std::move(cfg));
    if (!dev) return dev.status();
    auto* d = new sgb_device;
    d->impl = std::move(dev).value();
    d->backend = sgb_backend_ref(backend);
    *out = d;
    return 0;
  });
}

void sgb_device_destroy(sgb_device* dev) {
  if (!dev) return;
  (void)Guard([&] {
    // Jobs' done callbacks point into the caller's state: none may run after this returns,
    // even if an export keeps the device object alive a little longer.
    dev->impl->Shutdown();
    dev->impl.reset();
    sgb_backend_unref(dev->backend);
    delete dev;
    return 0;
  });
}

#define SGB_DEV_CHECK(dev) \
  do {                      \
    if (!(dev)) return -EINVAL; \
  } while (0)

int sgb_device_reset(sgb_device* dev) {
  SGB_DEV_CHECK(dev);
  return Guard([&] { return dev->impl->Reset(); });
}

int sgb_device_vram_fd(sgb_device* dev) {
  SGB_DEV_CHECK(dev);
  return dev->impl->memory().arena().memfd().fd();
}

uint64_t sgb_device_vram_size(sgb_device* dev) {
  return dev ? dev->impl->memory().arena().size() : 0;
}

void* sgb_device_vram_ptr(sgb_device* dev) {
  return dev ? dev->impl->memory().arena().data() : nullptr;
}

size_t sgb_process_open_fds(void) {
  size_t n = 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (readdir(d) != nullptr) ++n;
    closedir(d);
  }
  return n;
}

const char* sgb_device_name(sgb_device* dev) { return dev ? dev->impl->name().c_str() : ""; }

int sgb_device_stats_get(sgb_device* dev, sgb_device_stats* out) {
  SGB_DEV_CHECK(dev);
  if (!out) return -EINVAL;
  return Guard([&] {
    *out = dev->impl->Stats();
    return 0;
  });
}

void sgb_device_set_event_notify(sgb_device* dev, sgb_event_notify_fn fn, void* opaque) {
  if (dev) dev->impl->SetEventNotify(fn, opaque);
}

void sgb_device_set_invalidate_hook(sgb_device* dev, sgb_invalidate_fn fn, void* opaque) {
  if (dev) dev->impl->SetInvalidateHook(fn, opaque);
}

int sgb_device_pop_event(sgb_device* dev, sgb_event* out) {
  SGB_DEV_CHECK(dev);
  if (!out) return -EINVAL;
  return dev->impl->PopEvent(out);
}

int sgb_device_list_bos(sgb_device* dev, sgb_bo_debug_info* out, size_t cap, size_t* count) {
  SGB_DEV_CHECK(dev);
  if (cap && !out) return -EINVAL;
  return Guard([&] {
    size_t n = 0;
    auto infos = dev->impl->ListBos(&n);
    for (size_t i = 0; i < infos.size() && i < cap; ++i) out[i] = infos[i];
    if (count) *count = n;
    return 0;
  });
}

int sgb_bo_create(sgb_device* dev, uint64_t size, uint32_t placement, uint32_t flags,
                  uint32_t* handle) {
  SGB_DEV_CHECK(dev);
  if (!handle) return -EINVAL;
  if (!ValidPlacement(placement) || (flags & ~kAllocFlags)) return -EINVAL;
  return Guard([&] {
    auto h = dev->impl->CreateBo(size, static_cast<Placement>(placement), flags);
    if (!h) return h.status();
    *handle = *h;
    return 0;
  });
}

int sgb_bo_destroy(sgb_device* dev, uint32_t handle) {
  SGB_DEV_CHECK(dev);
  return Guard([&] { return dev->impl->DestroyBo(handle); });
}

int sgb_bo_state_get(sgb_device* dev, uint32_t handle, sgb_bo_state* out) {
  SGB_DEV_CHECK(dev);
  if (!out) return -EINVAL;
  return Guard([&] {
    auto state = dev->impl->State(handle);
    if (!state) return state.status();
    *out = *state;
    return 0;
  });
}

int sgb_bo_debug_info_get(sgb_device* dev, uint32_t handle, sgb_bo_debug_info* out) {
  SGB_DEV_CHECK(dev);
  if (!out) return -EINVAL;
  return Guard([&] {
    auto info = dev->impl->DebugInfo(handle);
    if (!info) return info.status();
    *out = *info;
    return 0;
  });
}

int sgb_coherency_note(sgb_device* dev, const sgb_coherency_input* in, sgb_coherency_report* out,
                       size_t cap, size_t* count) {
  SGB_DEV_CHECK(dev);
  if (!in || (cap && !out)) return -EINVAL;
  return Guard([&] {
    auto reports = dev->impl->NoteCoherency(*in);
    if (!reports) return reports.status();
    for (size_t i = 0; i < reports->size() && i < cap; ++i) out[i] = (*reports)[i];
    if (count) *count = reports->size();
    return 0;
  });
}

int sgb_bo_move(sgb_device* dev, uint32_t handle, uint32_t placement, uint32_t flags) {
  SGB_DEV_CHECK(dev);
  if (!ValidPlacement(placement) || (flags & ~kAllocFlags)) return -EINVAL;
  return Guard([&] {
    return dev->impl->Move(handle, static_cast<Placement>(placement), flags);
  });
}

int sgb_bo_own_storage(sgb_device* dev, uint32_t handle, uint32_t flags) {
  SGB_DEV_CHECK(dev);
  if (flags & ~(SGB_OWN_KEEP | SGB_OWN_RELOCATE)) return -EINVAL;
  if ((flags & SGB_OWN_RELOCATE) && !(flags & SGB_OWN_KEEP)) return -EINVAL;
  return Guard([&] { return dev->impl->OwnStorage(handle, flags); });
}

int sgb_bo_evict(sgb_device* dev, uint32_t handle) {
  return sgb_bo_move(dev, handle, SGB_PLACEMENT_SYSTEM, 0);
}

int sgb_bo_pin(sgb_device* dev, uint32_t handle) {
  SGB_DEV_CHECK(dev);
  return Guard([&] { return dev->impl->Pin(handle); });
}

int sgb_bo_unpin(sgb_device* dev, uint32_t handle) {
  SGB_DEV_CHECK(dev);
  return Guard([&] { return dev->impl->Unpin(handle); });
}

int sgb_bo_cpu_read(sgb_device* dev, uint32_t handle, uint64_t off, void* dst, uint64_t len) {
  SGB_DEV_CHECK(dev);
  return Guard([&] { return dev->impl->CpuRead(handle, off, dst, len); });
}

int sgb_bo_cpu_write(sgb_device* dev, uint32_t handle, uint64_t off, const void* src,
                      uint64_t len) {
  SGB_DEV_CHECK(dev);
  return Guard([&] { return dev->impl->CpuWrite(handle, off, src, len); });
}

int sgb_bo_begin_cpu_access(sgb_device* dev, uint32_t handle, uint32_t dir) {
  SGB_DEV_CHECK(dev);
  if (!ValidDir(dir)) return -EINVAL;
  return Guard([&] { return dev->impl->BeginCpuAccess(handle, static_cast<DmaDirection>(dir)); });
}

int sgb_bo_end_cpu_access(sgb_device* dev, uint32_t handle, uint32_t dir) {
  SGB_DEV_CHECK(dev);
  if (!ValidDir(dir)) return -EINVAL;
  return Guard([&] { return dev->impl->EndCpuAccess(handle, static_cast<DmaDirection>(dir)); });
}

int sgb_bo_cache_flush(sgb_device* dev, uint32_t handle, uint64_t off, uint64_t len) {
  SGB_DEV_CHECK(dev);
  return Guard([&] { return dev->impl->CacheFlush(handle, off, len); });
}

int sgb_bo_cache_invalidate(sgb_device* dev, uint32_t handle, uint64_t off, uint64_t len) {
  SGB_DEV_CHECK(dev);
  return Guard([&] { return dev->impl->CacheInvalidate(handle, off, len); });
}

int sgb_job_copy(sgb_device* dev, uint32_t src, uint64_t src_off, uint32_t dst,
                  uint64_t dst_off, uint64_t len, uint64_t* fence) {
  SGB_DEV_CHECK(dev);
  return Guard([&] { return dev->impl->Copy(src, src_off, dst, dst_off, len, fence); });
}

int sgb_job_fill(sgb_device* dev, uint32_t dst, uint64_t off, uint64_t len, uint32_t pattern,
                  uint64_t* fence) {
  SGB_DEV_CHECK(dev);
  return Guard([&] { return dev->impl->Fill(dst, off, len, pattern, fence); });
}

int sgb_job_checksum(sgb_device* dev, uint32_t src, uint64_t off, uint64_t len,
                      uint32_t* crc32c, uint64_t* fence) {
  SGB_DEV_CHECK(dev);
  if (!crc32c) return -EINVAL;
  return Guard([&] {
    auto crc = dev->impl->Checksum(src, off, len, fence);
    if (!crc) return crc.status();
    *crc32c = *crc;
    return 0;
  });
}

int sgb_job_submit(sgb_device* dev, const sgb_job* job, sgb_job_done_fn done, void* opaque,
                   uint64_t* fence) {
  SGB_DEV_CHECK(dev);
  if (!job || !done || job->op > SGB_JOB_CHECKSUM) return -EINVAL;
  return Guard([&] {
    sharegpu::JobRequest req{static_cast<sharegpu::JobOp>(job->op), job->handle, job->handle2,
                             job->off, job->off2, job->len, job->pattern};
    auto r = dev->impl->Submit(req, [done, opaque](uint64_t seqno, Status status,
                                                   uint64_t result) {
      done(opaque, seqno, status, result);
    });
    if (!r) return r.status();
    if (fence) *fence = *r;
    return 0;
  });
}

int sgb_bo_await_idle(sgb_device* dev, uint32_t handle, uint32_t what, sgb_idle_fn fn,
                      void* opaque) {
  SGB_DEV_CHECK(dev);
  if (!fn || what > SGB_AWAIT_PLACEMENT) return -EINVAL;
  return Guard([&] {
    return dev->impl->AwaitIdle(handle, static_cast<sharegpu::AwaitFor>(what),
                                [fn, opaque] { fn(opaque); });
  });
}

int sgb_engine_stall(sgb_device* dev, int stalled) {
  SGB_DEV_CHECK(dev);
  return Guard([&] {
    dev->impl->engine().Stall(stalled != 0);
    return 0;
  });
}

int sgb_engine_hold(sgb_device* dev, uint32_t handle, uint32_t ms) {
  SGB_DEV_CHECK(dev);
  return Guard([&] { return dev->impl->HoldCompletions(handle, std::chrono::milliseconds(ms)); });
}

int sgb_engine_release(sgb_device* dev) {
  SGB_DEV_CHECK(dev);
  return Guard([&] {
    dev->impl->engine().Release();
    return 0;
  });
}

int sgb_engine_abort(sgb_device* dev, uint32_t flags, uint32_t* cancelled) {
  SGB_DEV_CHECK(dev);
  if (flags & ~SGB_ABORT_NOWAIT) return -EINVAL;
  return Guard([&] {
    const size_t n = dev->impl->AbortJobs((flags & SGB_ABORT_NOWAIT) == 0);
    if (cancelled) *cancelled = static_cast<uint32_t>(n);
    return 0;
  });
}

int sgb_engine_list_jobs(sgb_device* dev, sgb_job_info* out, size_t cap, size_t* count) {
  SGB_DEV_CHECK(dev);
  if (cap && !out) return -EINVAL;
  return Guard([&] {
    std::vector<sharegpu::JobInfo> jobs = dev->impl->engine().InFlight();
    for (size_t i = 0; i < jobs.size() && i < cap; ++i) {
      sgb_job_info& o = out[i];
      o = sgb_job_info{};
      o.fence = jobs[i].seqno;
      o.op = static_cast<uint32_t>(jobs[i].op);
      o.handle = jobs[i].handles.empty() ? 0 : jobs[i].handles[0];
      o.handle2 = jobs[i].handles.size() > 1 ? jobs[i].handles[1] : 0;
      o.deps_pending = jobs[i].dependencies_pending;
      std::snprintf(o.state, sizeof(o.state), "%s", jobs[i].state.c_str());
    }
    if (count) *count = jobs.size();
    return 0;
  });
}

const char* sgb_engine_kind(sgb_device* dev) { return dev ? dev->impl->engine().kind() : ""; }

int sgb_engine_watch_begin(sgb_device* dev) {
  SGB_DEV_CHECK(dev);
  return Guard([&] { return dev->impl->engine().WatchBegin(); });
}

void sgb_engine_watch_ready(sgb_device* dev) {
  if (!dev) return;
  (void)Guard([&] {
    dev->impl->engine().WatchReady();
    return 0;
  });
}

void sgb_engine_watch_end(sgb_device* dev) {
  if (!dev) return;
  (void)Guard([&] {
    dev->impl->engine().WatchEnd();
    return 0;
  });
}

int sgb_bo_export(sgb_device* dev, uint32_t handle, sgb_uuid* uuid, int* fd) {
  SGB_DEV_CHECK(dev);
  return Guard([&] { return dev->impl->Export(handle, uuid, fd); });
}

int sgb_bo_import_uuid(sgb_device* dev, const sgb_uuid* uuid, uint32_t* handle) {
  SGB_DEV_CHECK(dev);
  if (!uuid || !handle) return -EINVAL;
  return Guard([&] {
    auto dmabuf = dev->backend->impl->LookupUuid(*uuid);
    if (!dmabuf) return dmabuf.status();
    auto h = dev->impl->ImportDmaBuf(*dmabuf);
    if (!h) return h.status();
    *handle = *h;
    return 0;
  });
}

int sgb_bo_import_fd(sgb_device* dev, int fd, uint32_t* handle) {
  SGB_DEV_CHECK(dev);
  if (!handle) return -EINVAL;
  return Guard([&] {
    auto dmabuf = dev->backend->impl->LookupFd(fd);
    if (!dmabuf) return dmabuf.status();
    auto h = dev->impl->ImportDmaBuf(*dmabuf);
    if (!h) return h.status();
    *handle = *h;
    return 0;
  });
}

int sgb_bo_create_foreign(sgb_device* dev, int fd, uint64_t size, uint32_t flags,
                          uint32_t* handle) {
  SGB_DEV_CHECK(dev);
  if (!handle || fd < 0 || (flags & ~SGB_FOREIGN_WRITABLE)) return -EINVAL;
  return Guard([&] {
    auto h = dev->impl->CreateForeignBo(fd, size, flags);
    if (!h) return h.status();
    *handle = *h;
    return 0;
  });
}

int sgb_bo_storage(sgb_device* dev, uint32_t handle, int* memfd, uint64_t* offset,
                    void** host_ptr, uint64_t* size) {
  SGB_DEV_CHECK(dev);
  return Guard([&] { return dev->impl->StorageOf(handle, memfd, offset, host_ptr, size); });
}

}  // extern "C"
