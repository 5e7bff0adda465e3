// Fences (dma_fence): a point on a timeline (context, seqno) that signals once, optionally
// with an error. Callbacks run exactly once: at signal time on the signalling thread, or
// never when AddCallback() reports the fence already signalled (-ENOENT), as in the kernel.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/thread_annotations.h"

namespace sharegpu {

class Fence;
using FenceRef = std::shared_ptr<Fence>;

// A timeline: hands out a unique context id and increasing seqnos (dma_fence_context_alloc).
class FenceTimeline {
 public:
  explicit FenceTimeline(std::string name);
  uint64_t context() const { return context_; }
  const std::string& name() const { return name_; }
  // A new unsignalled fence with the next seqno on this timeline.
  FenceRef CreateFence();

 private:
  const uint64_t context_;
  const std::string name_;
  std::atomic<uint64_t> next_seqno_{1};
};

class Fence : public std::enable_shared_from_this<Fence> {
 public:
  using Callback = std::function<void(const Fence&)>;

  Fence(uint64_t context, uint64_t seqno, std::string timeline_name);
  ~Fence();  // an unsignalled fence with waiters is a bug; it is signalled with -ECANCELED
  Fence(const Fence&) = delete;
  Fence& operator=(const Fence&) = delete;

  uint64_t context() const { return context_; }
  uint64_t seqno() const { return seqno_; }
  const std::string& timeline_name() const { return timeline_name_; }

  // Records an error to be reported once signalled (dma_fence_set_error). -EINVAL when already
  // signalled or when error is not negative.
  Status SetError(Status error);
  // Signals; 0 on the first call, -EINVAL when already signalled. Runs callbacks.
  Status Signal();
  Status SignalWithError(Status error);

  bool IsSignaled() const;
  // 0 while unsignalled or signalled fine, the negative error otherwise.
  Status error() const;

  // 0 and cb registered; -ENOENT when already signalled (cb not called), as the kernel does.
  Status AddCallback(Callback cb);

  // 0 when signalled within the timeout, -ETIME on timeout. A negative timeout waits forever.
  Status Wait(std::chrono::nanoseconds timeout = std::chrono::nanoseconds(-1)) const;

  // Later on the same timeline (dma_fence_is_later).
  bool IsLaterThan(const Fence& other) const {
    return context_ == other.context_ && seqno_ > other.seqno_;
  }

 private:
  // Signals with `error` (kOk keeps an error recorded by SetError) and runs the callbacks.
  Status SignalInternal(Status error);

  const uint64_t context_;
  const uint64_t seqno_;
  const std::string timeline_name_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  bool signaled_ SGB_GUARDED_BY(mu_) = false;
  Status error_ SGB_GUARDED_BY(mu_) = 0;
  std::vector<Callback> callbacks_ SGB_GUARDED_BY(mu_);
};

}  // namespace sharegpu
