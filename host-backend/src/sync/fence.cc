#include "sync/fence.h"

#include "common/log.h"

namespace sharegpu {
namespace {

// dma_fence_context_alloc(): context 0 is never handed out, so it can mean "none".
std::atomic<uint64_t> g_next_context{1};

}  // namespace

FenceTimeline::FenceTimeline(std::string name)
    : context_(g_next_context.fetch_add(1, std::memory_order_relaxed)), name_(std::move(name)) {}

FenceRef FenceTimeline::CreateFence() {
  return std::make_shared<Fence>(context_, next_seqno_.fetch_add(1, std::memory_order_relaxed),
                                 name_);
}

Fence::Fence(uint64_t context, uint64_t seqno, std::string timeline_name)
    : context_(context), seqno_(seqno), timeline_name_(std::move(timeline_name)) {}

Fence::~Fence() {
  bool has_callbacks;
  {
    std::lock_guard lock(mu_);
    if (signaled_) return;
    has_callbacks = !callbacks_.empty();
  }
  // Waiters hold references, so only callbacks can be left; they must still run once.
  if (has_callbacks) {
    Logf(LogLevel::kWarn, "fence %s:%llu destroyed unsignalled with callbacks; cancelling",
         timeline_name_.c_str(), static_cast<unsigned long long>(seqno_));
  }
  SignalWithError(-ECANCELED);
}

Status Fence::SetError(Status error) {
  std::lock_guard lock(mu_);
  if (signaled_ || error >= 0) return -EINVAL;
  error_ = error;
  return kOk;
}

Status Fence::Signal() {
  return SignalInternal(kOk);
}

Status Fence::SignalWithError(Status error) {
  if (error >= 0) return -EINVAL;
  return SignalInternal(error);
}

Status Fence::SignalInternal(Status error) {
  std::vector<Callback> callbacks;
  {
    std::lock_guard lock(mu_);
    if (signaled_) return -EINVAL;
    if (error < 0) error_ = error;
    signaled_ = true;
    callbacks.swap(callbacks_);
    cv_.notify_all();
  }
  // Outside mu_ so that a callback may query this fence or touch other objects. The list was
  // taken under mu_ together with setting signaled_, so each callback runs exactly once.
  for (Callback& cb : callbacks) cb(*this);
  return kOk;
}

bool Fence::IsSignaled() const {
  std::lock_guard lock(mu_);
  return signaled_;
}

Status Fence::error() const {
  std::lock_guard lock(mu_);
  return signaled_ ? error_ : kOk;
}

Status Fence::AddCallback(Callback cb) {
  std::lock_guard lock(mu_);
  if (signaled_) return -ENOENT;
  callbacks_.push_back(std::move(cb));
  return kOk;
}

Status Fence::Wait(std::chrono::nanoseconds timeout) const {
  std::unique_lock lock(mu_);
  auto done = [this]() SGB_REQUIRES(mu_) { return signaled_; };
  if (timeout < std::chrono::nanoseconds::zero()) {
    cv_.wait(lock, done);
    return kOk;
  }
  return cv_.wait_for(lock, timeout, done) ? kOk : -ETIME;
}

}  // namespace sharegpu
