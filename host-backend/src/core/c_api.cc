// The extern "C" face of the backend. Each entry point validates its arguments, calls into
// the C++ objects and converts the outcome to an errno; a catch-all keeps any exception
// (std::bad_alloc, in practice) from crossing into C.
#include <cstring>
#include <memory>
#include <mutex>
#include <new>

#include "common/log.h"
#include "core/backend.h"
#include "core/device.h"
#include "sharegpu/backend.h"

struct sgpu_backend {
  std::shared_ptr<sharegpu::Backend> impl;
  std::atomic<int> refs{1};
};

struct sgpu_device {
  std::shared_ptr<sharegpu::Device> impl;
  sgpu_backend* backend;
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

bool ValidPlacement(uint32_t p) { return p == SGPU_PLACEMENT_DEVICE || p == SGPU_PLACEMENT_SYSTEM; }
bool ValidDir(uint32_t d) { return d <= SGPU_DIR_FROM_DEVICE; }
constexpr uint32_t kAllocFlags = SGPU_ALLOC_NO_EVICT;

std::mutex g_shared_mu;
sgpu_backend* g_shared = nullptr;  // not owning: cleared by the last unref

sgpu_log_fn g_log_fn = nullptr;
void* g_log_opaque = nullptr;
void ForwardLog(void*, sharegpu::LogLevel level, const char* msg) {
  if (g_log_fn) g_log_fn(g_log_opaque, static_cast<int>(level), msg);
}

}  // namespace

extern "C" {

void sgpu_set_log_handler(sgpu_log_fn fn, void* opaque) {
  g_log_fn = fn;
  g_log_opaque = opaque;
  sharegpu::SetLogSink(fn ? ForwardLog : nullptr, nullptr);
}

const char* sgpu_strerror(int err) {
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

int sgpu_backend_new(sgpu_backend** out) {
  if (!out) return -EINVAL;
  return Guard([&] {
    auto* b = new sgpu_backend;
    b->impl = sharegpu::Backend::Create();
    *out = b;
    return 0;
  });
}

sgpu_backend* sgpu_backend_ref(sgpu_backend* backend) {
  if (backend) backend->refs.fetch_add(1);
  return backend;
}

void sgpu_backend_unref(sgpu_backend* backend) {
  if (!backend) return;
  std::lock_guard lock(g_shared_mu);
  if (backend->refs.fetch_sub(1) == 1) {
    if (backend == g_shared) g_shared = nullptr;
    delete backend;
  }
}

int sgpu_backend_get_shared(sgpu_backend** out) {
  if (!out) return -EINVAL;
  std::lock_guard lock(g_shared_mu);
  if (g_shared) {
    *out = sgpu_backend_ref(g_shared);
    return 0;
  }
  int err = sgpu_backend_new(&g_shared);
  if (err) return err;
  *out = g_shared;
  return 0;
}

int sgpu_device_create(sgpu_backend* backend, const sgpu_device_config* config, sgpu_device** out) {
  if (!backend || !config || !out) return -EINVAL;
  return Guard([&] {
    sharegpu::DeviceConfig cfg;
    cfg.name = config->name ? config->name : "sharegpu";
    cfg.vram_size = config->vram_size;
    cfg.cache_mode = config->coherent ? sharegpu::CacheMode::kCoherent : sharegpu::CacheMode::kStrict;
    cfg.max_hostmem = config->max_hostmem;
    auto dev = sharegpu::Device::Create(backend->impl, std::move(cfg));
    if (!dev) return dev.status();
    auto* d = new sgpu_device;
    d->impl = std::move(dev).value();
    d->backend = sgpu_backend_ref(backend);
    *out = d;
    return 0;
  });
}

void sgpu_device_destroy(sgpu_device* dev) {
  if (!dev) return;
  (void)Guard([&] {
    dev->impl.reset();
    sgpu_backend_unref(dev->backend);
    delete dev;
    return 0;
  });
}

#define SGPU_DEV_CHECK(dev) \
  do {                      \
    if (!(dev)) return -EINVAL; \
  } while (0)

int sgpu_device_reset(sgpu_device* dev) {
  SGPU_DEV_CHECK(dev);
  return Guard([&] { return dev->impl->Reset(); });
}

int sgpu_device_vram_fd(sgpu_device* dev) {
  SGPU_DEV_CHECK(dev);
  return dev->impl->memory().arena().memfd().fd();
}

uint64_t sgpu_device_vram_size(sgpu_device* dev) {
  return dev ? dev->impl->memory().arena().size() : 0;
}

void* sgpu_device_vram_ptr(sgpu_device* dev) {
  return dev ? dev->impl->memory().arena().data() : nullptr;
}

const char* sgpu_device_name(sgpu_device* dev) { return dev ? dev->impl->name().c_str() : ""; }

int sgpu_device_stats_get(sgpu_device* dev, sgpu_device_stats* out) {
  SGPU_DEV_CHECK(dev);
  if (!out) return -EINVAL;
  return Guard([&] {
    *out = dev->impl->Stats();
    return 0;
  });
}

void sgpu_device_set_event_notify(sgpu_device* dev, sgpu_event_notify_fn fn, void* opaque) {
  if (dev) dev->impl->SetEventNotify(fn, opaque);
}

int sgpu_device_pop_event(sgpu_device* dev, sgpu_event* out) {
  SGPU_DEV_CHECK(dev);
  if (!out) return -EINVAL;
  return dev->impl->PopEvent(out);
}

int sgpu_device_list_bos(sgpu_device* dev, sgpu_bo_info* out, size_t cap, size_t* count) {
  SGPU_DEV_CHECK(dev);
  if (cap && !out) return -EINVAL;
  return Guard([&] {
    size_t n = 0;
    auto infos = dev->impl->ListBos(&n);
    for (size_t i = 0; i < infos.size() && i < cap; ++i) out[i] = infos[i];
    if (count) *count = n;
    return 0;
  });
}

int sgpu_bo_create(sgpu_device* dev, uint64_t size, uint32_t placement, uint32_t* handle) {
  return sgpu_bo_create2(dev, size, placement, 0, handle);
}

int sgpu_bo_create2(sgpu_device* dev, uint64_t size, uint32_t placement, uint32_t flags,
                    uint32_t* handle) {
  SGPU_DEV_CHECK(dev);
  if (!handle) return -EINVAL;
  if (!ValidPlacement(placement) || (flags & ~kAllocFlags)) return -EINVAL;
  return Guard([&] {
    auto h = dev->impl->CreateBo(size, static_cast<Placement>(placement), flags);
    if (!h) return h.status();
    *handle = *h;
    return 0;
  });
}

int sgpu_bo_destroy(sgpu_device* dev, uint32_t handle) {
  SGPU_DEV_CHECK(dev);
  return Guard([&] { return dev->impl->DestroyBo(handle); });
}

int sgpu_bo_info_get(sgpu_device* dev, uint32_t handle, sgpu_bo_info* out) {
  SGPU_DEV_CHECK(dev);
  if (!out) return -EINVAL;
  return Guard([&] {
    auto info = dev->impl->Info(handle);
    if (!info) return info.status();
    *out = *info;
    return 0;
  });
}

int sgpu_bo_move(sgpu_device* dev, uint32_t handle, uint32_t placement) {
  return sgpu_bo_move2(dev, handle, placement, 0);
}

int sgpu_bo_move2(sgpu_device* dev, uint32_t handle, uint32_t placement, uint32_t flags) {
  SGPU_DEV_CHECK(dev);
  if (!ValidPlacement(placement) || (flags & ~kAllocFlags)) return -EINVAL;
  return Guard([&] {
    return dev->impl->Move(handle, static_cast<Placement>(placement), flags);
  });
}

int sgpu_bo_evict(sgpu_device* dev, uint32_t handle) {
  return sgpu_bo_move(dev, handle, SGPU_PLACEMENT_SYSTEM);
}

int sgpu_bo_pin(sgpu_device* dev, uint32_t handle) {
  SGPU_DEV_CHECK(dev);
  return Guard([&] { return dev->impl->Pin(handle); });
}

int sgpu_bo_unpin(sgpu_device* dev, uint32_t handle) {
  SGPU_DEV_CHECK(dev);
  return Guard([&] { return dev->impl->Unpin(handle); });
}

int sgpu_bo_cpu_read(sgpu_device* dev, uint32_t handle, uint64_t off, void* dst, uint64_t len) {
  SGPU_DEV_CHECK(dev);
  return Guard([&] { return dev->impl->CpuRead(handle, off, dst, len); });
}

int sgpu_bo_cpu_write(sgpu_device* dev, uint32_t handle, uint64_t off, const void* src,
                      uint64_t len) {
  SGPU_DEV_CHECK(dev);
  return Guard([&] { return dev->impl->CpuWrite(handle, off, src, len); });
}

int sgpu_bo_begin_cpu_access(sgpu_device* dev, uint32_t handle, uint32_t dir) {
  SGPU_DEV_CHECK(dev);
  if (!ValidDir(dir)) return -EINVAL;
  return Guard([&] { return dev->impl->BeginCpuAccess(handle, static_cast<DmaDirection>(dir)); });
}

int sgpu_bo_end_cpu_access(sgpu_device* dev, uint32_t handle, uint32_t dir) {
  SGPU_DEV_CHECK(dev);
  if (!ValidDir(dir)) return -EINVAL;
  return Guard([&] { return dev->impl->EndCpuAccess(handle, static_cast<DmaDirection>(dir)); });
}

int sgpu_bo_cache_flush(sgpu_device* dev, uint32_t handle, uint64_t off, uint64_t len) {
  SGPU_DEV_CHECK(dev);
  return Guard([&] { return dev->impl->CacheFlush(handle, off, len); });
}

int sgpu_bo_cache_invalidate(sgpu_device* dev, uint32_t handle, uint64_t off, uint64_t len) {
  SGPU_DEV_CHECK(dev);
  return Guard([&] { return dev->impl->CacheInvalidate(handle, off, len); });
}

int sgpu_job_copy(sgpu_device* dev, uint32_t src, uint64_t src_off, uint32_t dst,
                  uint64_t dst_off, uint64_t len, uint64_t* fence) {
  SGPU_DEV_CHECK(dev);
  return Guard([&] { return dev->impl->Copy(src, src_off, dst, dst_off, len, fence); });
}

int sgpu_job_fill(sgpu_device* dev, uint32_t dst, uint64_t off, uint64_t len, uint32_t pattern,
                  uint64_t* fence) {
  SGPU_DEV_CHECK(dev);
  return Guard([&] { return dev->impl->Fill(dst, off, len, pattern, fence); });
}

int sgpu_job_checksum(sgpu_device* dev, uint32_t src, uint64_t off, uint64_t len,
                      uint32_t* crc32c, uint64_t* fence) {
  SGPU_DEV_CHECK(dev);
  if (!crc32c) return -EINVAL;
  return Guard([&] {
    auto crc = dev->impl->Checksum(src, off, len, fence);
    if (!crc) return crc.status();
    *crc32c = *crc;
    return 0;
  });
}

int sgpu_bo_export(sgpu_device* dev, uint32_t handle, sgpu_uuid* uuid, int* fd) {
  SGPU_DEV_CHECK(dev);
  return Guard([&] { return dev->impl->Export(handle, uuid, fd); });
}

int sgpu_bo_import_uuid(sgpu_device* dev, const sgpu_uuid* uuid, uint32_t* handle) {
  SGPU_DEV_CHECK(dev);
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

int sgpu_bo_import_fd(sgpu_device* dev, int fd, uint32_t* handle) {
  SGPU_DEV_CHECK(dev);
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

int sgpu_bo_storage(sgpu_device* dev, uint32_t handle, int* memfd, uint64_t* offset,
                    void** host_ptr, uint64_t* size) {
  SGPU_DEV_CHECK(dev);
  return Guard([&] { return dev->impl->StorageOf(handle, memfd, offset, host_ptr, size); });
}

}  // extern "C"
