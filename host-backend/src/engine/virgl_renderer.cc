#include "engine/virgl_renderer.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

extern "C" {  // virglrenderer.h has no C++ guards
#include <virgl/virglrenderer.h>
}

#include "common/log.h"
#include "common/owned_fd.h"
#include "mem/copy_engine.h"

// virglrenderer installs only virglrenderer.h; the few protocol words this file sends are
// those of virglrenderer's src/virgl_protocol.h and src/virgl_hw.h.
struct virgl_box {
  uint32_t x, y, z, w, h, d;
};

namespace sharegpu {
namespace {

constexpr uint32_t VirglCmd0(uint32_t cmd, uint32_t obj, uint32_t len) {
  return cmd | (obj << 8) | (len << 16);
}
constexpr uint32_t kVirglCcmdResourceInlineWrite = 9;
constexpr uint32_t kVirglCcmdResourceCopyRegion = 17;
constexpr uint32_t kVirglCopyRegionDwords = 13;
constexpr uint32_t kVirglInlineWriteHeaderDwords = 11;
constexpr uint32_t kVirglMaxCmdDwords = 0xffff;  // the header's 16-bit length
constexpr uint32_t kPipeBuffer = 0;              // enum pipe_texture_target
constexpr uint32_t kVirglFormatR8Unorm = 64;     // enum virgl_formats
constexpr uint32_t kVirglBindVertexBuffer = 1u << 4;
constexpr uint32_t kContextId = 1;
// Bytes of pattern per inline write: the whole command must fit the 16-bit dword count.
constexpr uint64_t kFillChunk = uint64_t{kVirglMaxCmdDwords - kVirglInlineWriteHeaderDwords} * 4 &
                                ~uint64_t{4095};
// Staging buffer of the jobs that pass through host memory (checksum, overlapping copy).
constexpr uint64_t kStagingChunk = uint64_t{1} << 20;

// Serial-number order for the renderer's 32-bit fence ids (wrap-safe).
bool FenceReached(uint32_t id, uint32_t signalled) {
  return static_cast<int32_t>(signalled - id) >= 0;
}

// What virgl_renderer_init needs of EGL, checked first: libvirglrenderer 0.10 crashes
// (instead of failing) when no EGL vendor offers a display. Through dlopen, with the few EGL
// words defined here, so the backend needs no EGL headers or link dependency of its own.
// Returns "" when EGL surfaceless works, else what is missing.
std::string ProbeEglSurfaceless() {
  using EGLDisplay = void*;
  using QueryString = const char* (*)(EGLDisplay, int32_t);
  using GetPlatformDisplay = EGLDisplay (*)(uint32_t, void*, const intptr_t*);
  using Initialize = unsigned (*)(EGLDisplay, int32_t*, int32_t*);
  constexpr int32_t kEglExtensions = 0x3055;
  constexpr uint32_t kEglPlatformSurfacelessMesa = 0x31DD;
  void* egl = dlopen("libEGL.so.1", RTLD_NOW | RTLD_LOCAL);  // stays loaded: virgl uses it
  if (!egl) return "libEGL.so.1 cannot be loaded (Debian: libegl1)";
  auto query = reinterpret_cast<QueryString>(dlsym(egl, "eglQueryString"));
  auto get_display = reinterpret_cast<GetPlatformDisplay>(dlsym(egl, "eglGetPlatformDisplay"));
  auto initialize = reinterpret_cast<Initialize>(dlsym(egl, "eglInitialize"));
  if (!query || !get_display || !initialize) {
    return "libEGL.so.1 lacks EGL 1.5 (eglGetPlatformDisplay)";
  }
  const char* extensions = query(nullptr, kEglExtensions);
  if (!extensions || !std::strstr(extensions, "EGL_MESA_platform_surfaceless")) {
    return "no EGL vendor with the surfaceless platform (Debian: libegl-mesa0)";
  }
  EGLDisplay display = get_display(kEglPlatformSurfacelessMesa, nullptr, nullptr);
  int32_t major = 0, minor = 0;
  if (!display || !initialize(display, &major, &minor)) {
    return "the EGL surfaceless display does not initialise: no Mesa driver "
           "(Debian: libgl1-mesa-dri)";
  }
  // Not terminated: virglrenderer gets this same display (EGL has one per platform and native
  // display) and initialises it again, a no-op. Terminating it would unload the DRI driver in
  // between, and what the driver allocated once (pthread_once) would be left unreachable: a
  // leak LeakSanitizer reports against this function, with the driver's frames unnamed.
  return "";
}

}  // namespace

// The one thread that talks to virglrenderer: runs posted tasks, and turns the renderer's
// poll fd into write_fence callbacks: it watches the fd itself, or, while an event loop
// watches it (QEMU's main loop, WatchBegin), polls when the loop says the fd was readable,
// and by itself only after kWatchFallback with a fence pending and no word from the loop.
class VirglWorker {
 public:
  ~VirglWorker() {
    Post([this] {
      if (initialised_) {
        virgl_renderer_context_destroy(kContextId);
        virgl_renderer_cleanup(this);
      }
      stop_ = true;
      return kOk;
    });
    if (thread_.joinable()) thread_.join();
  }

  Status Start() {
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0) return -errno;
    wake_ = OwnedFd(fd);
    thread_ = std::thread([this] { Loop(); });
    return Post([this] { return Init(); });
  }

  // Runs fn on the worker and waits for its status.
  Status Post(std::function<Status()> fn) {
    std::packaged_task<Status()> task(std::move(fn));
    std::future<Status> result = task.get_future();
    if (!Enqueue(std::move(task))) return -EIO;
    return result.get();
  }

  // Runs fn on the worker without waiting for it.
  void PostNoWait(std::function<void()> fn) {
    (void)Enqueue(std::packaged_task<Status()>([fn = std::move(fn)] {
      fn();
      return kOk;
    }));
  }

  // An event loop watches the poll fd from now on (until WatchEnd): the fd, or -ENOENT.
  int WatchBegin() {
    int fd = -ENOENT;
    Post([&] {
      if (poll_fd_ < 0) return kOk;
      // WatchReady drains it from the loop's thread and must never block there
      int flags = fcntl(poll_fd_, F_GETFL);
      if (flags < 0 || fcntl(poll_fd_, F_SETFL, flags | O_NONBLOCK) < 0) {
        fd = -errno;
        return kOk;
      }
      ++watchers_;
      fd = poll_fd_;
      return kOk;
    });
    return fd;
  }

  void WatchEnd() {
    Post([this] {
      if (watchers_ > 0) --watchers_;
      return kOk;
    });
  }

  // Any thread, never blocks: the loop saw the poll fd readable. Draining it here keeps a
  // level-triggered loop from spinning until the worker has polled.
  void WatchReady() {
    uint64_t count;
    if (poll_fd_ >= 0) (void)!read(poll_fd_, &count, sizeof(count));
    if (poll_requested_.exchange(true)) return;  // a poll is queued already
    PostNoWait([this] {
      poll_requested_.store(false);
      loop_polls_.fetch_add(1, std::memory_order_relaxed);
      virgl_renderer_poll();
    });
  }

  uint64_t loop_polls() const { return loop_polls_.load(std::memory_order_relaxed); }
  uint64_t fallback_polls() const { return fallback_polls_.load(std::memory_order_relaxed); }

  // Worker thread only.
  Status AddFence(std::function<void()> on_signal) {
    uint32_t id = ++last_fence_id_;
    pending_.push_back({id, std::move(on_signal)});
    int ret = virgl_renderer_create_fence(static_cast<int>(id), kContextId);
    if (ret) {
      pending_.pop_back();
      return -std::abs(ret);
    }
    return kOk;
  }

  uint64_t fences_signalled() const { return signalled_.load(std::memory_order_relaxed); }

 private:
  // Queues the task and wakes the worker; false when the wake-up could not be written.
  bool Enqueue(std::packaged_task<Status()> task) {
    {
      std::lock_guard lock(mu_);
      tasks_.push_back(std::move(task));
    }
    uint64_t one = 1;
    return write(wake_.get(), &one, sizeof(one)) == sizeof(one);
  }

  struct PendingFence {
    uint32_t id;
    std::function<void()> on_signal;
  };

  static void WriteFence(void* cookie, uint32_t fence) {
    static_cast<VirglWorker*>(cookie)->OnFence(fence);
  }

  void OnFence(uint32_t fence) {
    if (fallback_poll_ == FallbackPoll::kRunning) {
      fallback_poll_ = FallbackPoll::kCounted;
      fallback_polls_.fetch_add(1, std::memory_order_relaxed);
    }
    while (!pending_.empty() && FenceReached(pending_.front().id, fence)) {
      auto cb = std::move(pending_.front().on_signal);
      pending_.pop_front();
      signalled_.fetch_add(1, std::memory_order_relaxed);
      if (cb) cb();
    }
  }

  Status Init() {
    if (std::string missing = ProbeEglSurfaceless(); !missing.empty()) {
      Logf(LogLevel::kError, "virgl engine: virglrenderer cannot initialise: %s",
           missing.c_str());
      return -ENODEV;
    }
    callbacks_.version = 1;
    callbacks_.write_fence = &VirglWorker::WriteFence;
    int ret = virgl_renderer_init(this,
                                  VIRGL_RENDERER_USE_EGL | VIRGL_RENDERER_USE_SURFACELESS |
                                      VIRGL_RENDERER_THREAD_SYNC,
                                  &callbacks_);
    if (ret) {
      Logf(LogLevel::kError,
           "virgl engine: virgl_renderer_init failed (%d): needs EGL with surfaceless "
           "platform support and a Mesa driver (Debian: libegl-mesa0, libgl1-mesa-dri)",
           ret);
      return -ENODEV;
    }
    initialised_ = true;
    static constexpr char kName[] = "sharegpu";
    ret = virgl_renderer_context_create(kContextId, sizeof(kName) - 1, kName);
    if (ret) {
      Logf(LogLevel::kError, "virgl engine: virgl_renderer_context_create failed (%d)", ret);
      return -ENODEV;
    }
    poll_fd_ = virgl_renderer_get_poll_fd();
    return kOk;
  }

  void Loop() {
    while (!stop_) {
      const bool watch_self = poll_fd_ >= 0 && watchers_ == 0;
      // a loop blocked in a synchronous wait must not leave a fence unsignalled for ever
      const int timeout = !watch_self && poll_fd_ >= 0 && !pending_.empty()
                              ? static_cast<int>(VirglRenderer::kWatchFallback.count())
                              : -1;
      pollfd fds[2] = {{wake_.get(), POLLIN, 0}, {poll_fd_, POLLIN, 0}};
      int n = poll(fds, watch_self ? 2 : 1, timeout);
      if (n < 0 && errno != EINTR) break;
      if (n == 0) {
        fallback_poll_ = FallbackPoll::kRunning;  // OnFence counts it, before any callback
        virgl_renderer_poll();
        fallback_poll_ = FallbackPoll::kNone;
        continue;
      }
      if (watch_self && (fds[1].revents & POLLIN)) virgl_renderer_poll();
      if (fds[0].revents & POLLIN) {
        uint64_t count;
        (void)!read(wake_.get(), &count, sizeof(count));
        RunTasks();
      }
    }
  }

  void RunTasks() {
    std::deque<std::packaged_task<Status()>> batch;
    {
      std::lock_guard lock(mu_);
      batch.swap(tasks_);
    }
    for (auto& task : batch) task();
  }

  std::thread thread_;
  OwnedFd wake_;
  std::mutex mu_;
  std::deque<std::packaged_task<Status()>> tasks_;  // guarded by mu_
  // Worker-thread state:
  virgl_renderer_callbacks callbacks_{};
  bool initialised_ = false;
  bool stop_ = false;
  int poll_fd_ = -1;  // set by Init, before any other thread reads it
  int watchers_ = 0;  // event loops watching poll_fd_ (WatchBegin - WatchEnd)
  enum class FallbackPoll { kNone, kRunning, kCounted } fallback_poll_ = FallbackPoll::kNone;
  uint32_t last_fence_id_ = 0;
  std::deque<PendingFence> pending_;
  std::atomic<uint64_t> signalled_{0};
  std::atomic<bool> poll_requested_{false};
  std::atomic<uint64_t> loop_polls_{0};
  std::atomic<uint64_t> fallback_polls_{0};
};

namespace {
std::mutex g_renderer_mu;
std::weak_ptr<VirglRenderer> g_renderer;  // the process has one virglrenderer
}  // namespace

Result<std::shared_ptr<VirglRenderer>> VirglRenderer::Get() {
  std::lock_guard lock(g_renderer_mu);
  if (auto existing = g_renderer.lock()) return existing;
  std::shared_ptr<VirglRenderer> renderer(new VirglRenderer());
  renderer->worker_ = std::make_unique<VirglWorker>();
  Status st = renderer->worker_->Start();
  if (st != kOk) return Result<std::shared_ptr<VirglRenderer>>::Error(st);
  g_renderer = renderer;
  return renderer;
}

VirglRenderer::~VirglRenderer() = default;

Status VirglRenderer::Run(const std::function<Status()>& fn) { return worker_->Post(fn); }

uint64_t VirglRenderer::fences_signalled() const { return worker_->fences_signalled(); }

int VirglRenderer::WatchBegin() { return worker_->WatchBegin(); }
void VirglRenderer::WatchReady() { worker_->WatchReady(); }
void VirglRenderer::WatchEnd() { worker_->WatchEnd(); }
uint64_t VirglRenderer::loop_polls() const { return worker_->loop_polls(); }
uint64_t VirglRenderer::fallback_polls() const { return worker_->fallback_polls(); }

Result<VirglRenderer::BufferResource> VirglRenderer::CreateBuffer(uint8_t* mem, uint64_t size) {
  if (!mem || size == 0) return Result<BufferResource>::Error(-EINVAL);
  if (size > kMaxBufferSize) return Result<BufferResource>::Error(-E2BIG);
  static std::atomic<uint32_t> next_id{1};
  uint32_t id = next_id.fetch_add(1);
  Status st = Run([&] {
    virgl_renderer_resource_create_args args{};
    args.handle = id;
    args.target = kPipeBuffer;
    args.format = kVirglFormatR8Unorm;
    args.bind = kVirglBindVertexBuffer;
    args.width = static_cast<uint32_t>(size);
    args.height = 1;
    args.depth = 1;
    args.array_size = 1;
    iovec iov{mem, size};
    int ret = virgl_renderer_resource_create(&args, &iov, 1);
    if (ret) return -std::abs(ret);
    virgl_renderer_ctx_attach_resource(kContextId, static_cast<int>(id));
    return kOk;
  });
  if (st != kOk) return Result<BufferResource>::Error(st);
  return BufferResource(shared_from_this(), id, mem, size);
}

void VirglRenderer::DestroyResource(uint32_t id) {
  Run([id] {
    virgl_renderer_ctx_detach_resource(kContextId, static_cast<int>(id));
    virgl_renderer_resource_unref(id);
    return kOk;
  });
}

VirglRenderer::BufferResource::BufferResource(BufferResource&& other) noexcept
    : renderer_(std::move(other.renderer_)),
      id_(std::exchange(other.id_, 0)),
      mem_(other.mem_),
      size_(other.size_) {}

VirglRenderer::BufferResource& VirglRenderer::BufferResource::operator=(
    BufferResource&& other) noexcept {
  if (this != &other) {
    if (renderer_ && id_) renderer_->DestroyResource(id_);
    renderer_ = std::move(other.renderer_);
    id_ = std::exchange(other.id_, 0);
    mem_ = other.mem_;
    size_ = other.size_;
  }
  return *this;
}

VirglRenderer::BufferResource::~BufferResource() {
  if (renderer_ && id_) renderer_->DestroyResource(id_);
}

Status VirglRenderer::Transfer(const BufferResource& res, uint64_t off, uint64_t len,
                               bool to_gl) {
  if (len == 0 || !RangeFits(off, len, res.size_)) return -ERANGE;
  return Run([&] {
    virgl_box box{static_cast<uint32_t>(off), 0, 0, static_cast<uint32_t>(len), 1, 1};
    iovec iov{res.mem_, res.size_};
    int ret = to_gl ? virgl_renderer_transfer_write_iov(res.id_, kContextId, 0, 0, 0, &box, off,
                                                        &iov, 1)
                    : virgl_renderer_transfer_read_iov(res.id_, kContextId, 0, 0, 0, &box, off,
                                                       &iov, 1);
    return -std::abs(ret);
  });
}

Status VirglRenderer::Upload(const BufferResource& res, uint64_t off, uint64_t len) {
  return Transfer(res, off, len, /*to_gl=*/true);
}

Status VirglRenderer::Download(const BufferResource& res, uint64_t off, uint64_t len) {
  return Transfer(res, off, len, /*to_gl=*/false);
}

Status VirglRenderer::StagingTransfer(const BufferResource& res, uint64_t off, uint64_t len,
                                      uint8_t* buf, bool to_gl) {
  if (len == 0 || !RangeFits(off, len, res.size_)) return -ERANGE;
  return Run([&] {
    virgl_box box{static_cast<uint32_t>(off), 0, 0, static_cast<uint32_t>(len), 1, 1};
    iovec iov{buf, len};
    int ret = to_gl ? virgl_renderer_transfer_write_iov(res.id_, kContextId, 0, 0, 0, &box, 0,
                                                        &iov, 1)
                    : virgl_renderer_transfer_read_iov(res.id_, kContextId, 0, 0, 0, &box, 0,
                                                       &iov, 1);
    return -std::abs(ret);
  });
}

Status VirglRenderer::ReadGl(const BufferResource& res, uint64_t off, uint64_t len, uint8_t* out) {
  return StagingTransfer(res, off, len, out, /*to_gl=*/false);
}

Status VirglRenderer::WriteGl(const BufferResource& res, uint64_t off, uint64_t len,
                              const uint8_t* in) {
  // virgl only reads the iovec of a write transfer.
  return StagingTransfer(res, off, len, const_cast<uint8_t*>(in), /*to_gl=*/true);
}

Status VirglRenderer::Copy(const BufferResource& src, uint64_t src_off, const BufferResource& dst,
                           uint64_t dst_off, uint64_t len) {
  if (len == 0) return -EINVAL;
  if (!RangeFits(src_off, len, src.size_) || !RangeFits(dst_off, len, dst.size_)) {
    return -ERANGE;
  }
  if (src.id_ == dst.id_ && src_off < dst_off + len && dst_off < src_off + len) {
    // glCopyBufferSubData refuses overlapping ranges of one buffer: through host memory, in
    // chunks, back to front when the destination starts inside the source (memmove).
    if (src_off == dst_off) return kOk;
    const bool backwards = dst_off > src_off;
    const uint64_t chunk = std::min(len, kStagingChunk);
    std::vector<uint8_t> staging(chunk);
    for (uint64_t done = 0; done < len;) {
      const uint64_t n = std::min(chunk, len - done);
      const uint64_t pos = backwards ? len - done - n : done;
      if (Status st = ReadGl(src, src_off + pos, n, staging.data())) return st;
      if (Status st = WriteGl(dst, dst_off + pos, n, staging.data())) return st;
      done += n;
    }
    return kOk;
  }
  uint32_t cmd[1 + kVirglCopyRegionDwords] = {
      VirglCmd0(kVirglCcmdResourceCopyRegion, 0, kVirglCopyRegionDwords),
      dst.id_, 0, static_cast<uint32_t>(dst_off), 0, 0,
      src.id_, 0, static_cast<uint32_t>(src_off), 0, 0, static_cast<uint32_t>(len), 1, 1};
  return Run([&] {
    return -std::abs(virgl_renderer_submit_cmd(cmd, kContextId, std::size(cmd)));
  });
}

Status VirglRenderer::Fill(const BufferResource& dst, uint64_t off, uint64_t len,
                           uint32_t pattern) {
  if (len == 0 || off % 4 || len % 4) return -EINVAL;
  if (!RangeFits(off, len, dst.size_)) return -ERANGE;
  return Run([&] {
    std::vector<uint32_t> cmd(1 + kVirglInlineWriteHeaderDwords + std::min(len, kFillChunk) / 4,
                              pattern);
    for (uint64_t done = 0; done < len;) {
      uint64_t chunk = std::min(len - done, kFillChunk);
      uint32_t dwords = static_cast<uint32_t>(kVirglInlineWriteHeaderDwords + chunk / 4);
      const uint32_t header[1 + kVirglInlineWriteHeaderDwords] = {
          VirglCmd0(kVirglCcmdResourceInlineWrite, 0, dwords),
          dst.id_, 0, 0, 0, 0, static_cast<uint32_t>(off + done), 0, 0,
          static_cast<uint32_t>(chunk), 1, 1};
      std::copy(std::begin(header), std::end(header), cmd.begin());
      int ret = virgl_renderer_submit_cmd(cmd.data(), kContextId, static_cast<int>(1 + dwords));
      if (ret) return -std::abs(ret);
      done += chunk;
    }
    return kOk;
  });
}

Result<uint32_t> VirglRenderer::Checksum(const BufferResource& src, uint64_t off, uint64_t len) {
  if (len == 0) return Result<uint32_t>::Error(-EINVAL);
  if (!RangeFits(off, len, src.size_)) return Result<uint32_t>::Error(-ERANGE);
  // The GL contents, not the pages: a checksum job reads what the device sees.
  std::vector<uint8_t> staging(std::min(len, kStagingChunk));
  uint32_t crc = 0;
  for (uint64_t done = 0; done < len;) {
    const uint64_t n = std::min<uint64_t>(staging.size(), len - done);
    if (Status st = ReadGl(src, off + done, n, staging.data())) return Result<uint32_t>::Error(st);
    crc = Crc32c(crc, staging.data(), n);
    done += n;
  }
  return crc;
}

Status VirglRenderer::Fence(std::function<void()> on_signal) {
  return Run([&] { return worker_->AddFence(std::move(on_signal)); });
}

}  // namespace sharegpu
