// libvirglrenderer as a device: buffer resources whose GL-side contents are the device's view
// of a buffer object, jobs (copy, fill, checksum) as virgl command streams, and virgl fences.
//
// The GL side of a resource is a real non-coherent device cache: a job reads and writes the
// GL copy only. Upload (pages -> GL, transfer_write_iov) is the cache invalidate; Download
// (GL -> pages, transfer_read_iov) is the write-back. Without them a CPU write is not seen by
// a job and a job's output is not seen by the CPU (rule S4 on a real device).
//
// How each job runs (docs/engines.md):
//   Copy      VIRGL_CCMD_RESOURCE_COPY_REGION (glCopyBufferSubData in the renderer); an
//             overlapping copy within one resource, which GL forbids, goes through a staging
//             buffer (transfer_read_iov + transfer_write_iov, chunk by chunk, memmove order)
//   Fill      VIRGL_CCMD_RESOURCE_INLINE_WRITE of the pattern, in chunks of up to 256 KiB
//   Checksum  transfer_read_iov of the GL contents into a staging buffer + CRC-32C on the CPU
//             (virgl has no reduction command), chunk by chunk
//
// Threading: virglrenderer keeps process-global state and a GL context current on the thread
// that initialised it, so one worker thread owns every virgl call; the methods here post to
// it and wait. Fence callbacks run on the worker. virgl's poll fd is watched by the worker,
// or by an event loop that asks for it (WatchBegin: QEMU's main loop, as virtio-gpu-virgl
// watches it); then the worker polls when the loop calls WatchReady, and by itself only
// after kWatchFallback with a fence pending and no call (a blocked loop stalls no job).
// Ownership: Get() returns a shared reference; the renderer is torn down (on the worker) with
// the last one. Resources are owned by the caller through BufferResource (RAII).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>

#include "common/status.h"

namespace sharegpu {

class VirglWorker;

class VirglRenderer : public std::enable_shared_from_this<VirglRenderer> {
 public:
  // The process-wide renderer (EGL surfaceless; llvmpipe where there is no GPU). The error
  // log names what is missing (-ENODEV when virglrenderer cannot initialise).
  static Result<std::shared_ptr<VirglRenderer>> Get();
  ~VirglRenderer();
  VirglRenderer(const VirglRenderer&) = delete;
  VirglRenderer& operator=(const VirglRenderer&) = delete;

  // A virgl buffer resource backed by `mem` (borrowed: must outlive the resource). Its GL
  // contents start undefined: Upload before the first job that reads it.
  class BufferResource {
   public:
    BufferResource(BufferResource&& other) noexcept;
    BufferResource& operator=(BufferResource&& other) noexcept;
    ~BufferResource();
    uint32_t id() const { return id_; }
    uint64_t size() const { return size_; }

   private:
    friend class VirglRenderer;
    BufferResource(std::shared_ptr<VirglRenderer> renderer, uint32_t id, uint8_t* mem,
                   uint64_t size)
        : renderer_(std::move(renderer)), id_(id), mem_(mem), size_(size) {}
    std::shared_ptr<VirglRenderer> renderer_;
    uint32_t id_ = 0;
    uint8_t* mem_ = nullptr;
    uint64_t size_ = 0;
  };

  // GL buffer sizes are int.
  static constexpr uint64_t kMaxBufferSize = uint64_t{1} << 30;
  // size: 1 .. kMaxBufferSize (-E2BIG above).
  Result<BufferResource> CreateBuffer(uint8_t* mem, uint64_t size);

  // Device-cache maintenance on a byte range (-ERANGE outside the resource).
  Status Upload(const BufferResource& res, uint64_t off, uint64_t len);
  Status Download(const BufferResource& res, uint64_t off, uint64_t len);
  // The GL contents of a range to / from caller memory (staging; the resource's pages are not
  // touched), -ERANGE outside the resource.
  Status ReadGl(const BufferResource& res, uint64_t off, uint64_t len, uint8_t* out);
  Status WriteGl(const BufferResource& res, uint64_t off, uint64_t len, const uint8_t* in);

  // Jobs, queued on the GL context in submission order. Same argument rules as CopyEngine:
  // len > 0, ranges inside the resources, fill offsets/lengths multiples of 4.
  Status Copy(const BufferResource& src, uint64_t src_off, const BufferResource& dst,
              uint64_t dst_off, uint64_t len);
  Status Fill(const BufferResource& dst, uint64_t off, uint64_t len, uint32_t pattern);
  Result<uint32_t> Checksum(const BufferResource& src, uint64_t off, uint64_t len);

  // A virgl fence after everything submitted so far; `on_signal` runs on the worker thread
  // once the renderer reports it (write_fence), in submission order.
  Status Fence(std::function<void()> on_signal);

  // How many fences the renderer has reported signalled (for tests and the monitor).
  uint64_t fences_signalled() const;

  // An event loop watches the poll fd: the fd (>= 0, the renderer's, valid while this
  // renderer lives) or -ENOENT when virglrenderer has none. Nested: every WatchBegin needs
  // a WatchEnd. WatchReady (any thread, never blocks): the fd was readable; it is drained
  // and the worker polls the renderer (write_fence callbacks follow on the worker).
  static constexpr std::chrono::milliseconds kWatchFallback{100};
  int WatchBegin();
  void WatchReady();
  void WatchEnd();
  // Polls run because the loop asked, and fallback polls that signalled a fence.
  uint64_t loop_polls() const;
  uint64_t fallback_polls() const;

 private:
  VirglRenderer() = default;
  Status Run(const std::function<Status()>& fn);
  Status Transfer(const BufferResource& res, uint64_t off, uint64_t len, bool to_gl);
  Status StagingTransfer(const BufferResource& res, uint64_t off, uint64_t len, uint8_t* buf,
                         bool to_gl);
  void DestroyResource(uint32_t id);

  std::unique_ptr<VirglWorker> worker_;
};

}  // namespace sharegpu
