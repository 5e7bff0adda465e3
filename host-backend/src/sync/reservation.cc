#include "sync/reservation.h"

#include <algorithm>

#include "common/log.h"

namespace sharegpu {

const char* ResvUsageName(ResvUsage usage) {
  switch (usage) {
    case ResvUsage::kKernel:
      return "kernel";
    case ResvUsage::kWrite:
      return "write";
    case ResvUsage::kRead:
      return "read";
    case ResvUsage::kBookkeep:
      return "bookkeep";
  }
  return "?";
}

WwClass& ReservationWwClass() {
  static WwClass* const ww_class = new WwClass("reservation_ww_class");  // never destroyed
  return *ww_class;
}

ReservationObject::ReservationObject(WwClass& ww_class) : lock_(ww_class) {}

namespace {

bool CheckHeld(bool held, const char* what) {
  if (!held) Logf(LogLevel::kError, "dma_resv: %s without holding the reservation lock", what);
  return held;
}

}  // namespace

Status ReservationObject::ReserveFences(unsigned n) {
  if (!CheckHeld(IsHeld(), "reserve_fences")) return -ENOLCK;
  std::lock_guard lock(fences_mu_);
  // Like the reallocation in dma_resv_reserve_fences(), drop what has signalled already.
  std::erase_if(fences_, [](const Entry& e) { return e.fence->IsSignaled(); });
  reserved_ = std::max(reserved_, n);
  fences_.reserve(fences_.size() + reserved_);  // so AddFence() never allocates
  return kOk;
}

Status ReservationObject::AddFence(FenceRef fence, ResvUsage usage) {
  if (fence == nullptr) return -EINVAL;
  if (!CheckHeld(IsHeld(), "add_fence")) return -ENOLCK;
  std::lock_guard lock(fences_mu_);
  for (Entry& e : fences_) {
    // dma_resv_add_fence(): a later-or-same fence of the same context replaces the old one
    // only if that does not weaken it (old usage >= new usage), and a signalled fence's slot
    // is free for reuse. The entry takes the new fence's usage either way.
    const bool same_ctx_later = e.fence->context() == fence->context() && e.usage >= usage &&
                                e.fence->seqno() <= fence->seqno();
    if (same_ctx_later || e.fence->IsSignaled()) {
      e.fence = std::move(fence);
      e.usage = usage;
      return kOk;
    }
  }
  if (reserved_ == 0) {
    Logf(LogLevel::kWarn, "dma_resv: add_fence without a reserved slot");
    return -ENOSPC;
  }
  --reserved_;
  fences_.push_back({std::move(fence), usage});
  return kOk;
}

std::vector<FenceRef> ReservationObject::Fences(ResvUsage usage) const {
  std::vector<FenceRef> out;
  if (!CheckHeld(IsHeld(), "fences query")) return out;
  std::lock_guard lock(fences_mu_);
  for (const Entry& e : fences_) {
    if (e.usage <= usage) out.push_back(e.fence);
  }
  return out;
}

std::vector<ReservationObject::Entry> ReservationObject::Entries() const {
  if (!CheckHeld(IsHeld(), "entries query")) return {};
  std::lock_guard lock(fences_mu_);
  return fences_;
}

bool ReservationObject::TestSignaled(ResvUsage usage) const {
  std::lock_guard lock(fences_mu_);
  return std::all_of(fences_.begin(), fences_.end(),
                     [usage](const Entry& e) { return e.usage > usage || e.fence->IsSignaled(); });
}

Status ReservationObject::WaitTimeout(ResvUsage usage, std::chrono::nanoseconds timeout) const {
  std::vector<FenceRef> pending;
  {
    // Snapshot, then wait without fences_mu_ so writers are never blocked behind a wait.
    std::lock_guard lock(fences_mu_);
    for (const Entry& e : fences_) {
      if (e.usage <= usage) pending.push_back(e.fence);
    }
  }
  using Clock = std::chrono::steady_clock;
  // Negative or absurdly long timeouts wait forever (and keep now() + timeout from overflowing).
  const bool forever =
      timeout < std::chrono::nanoseconds::zero() || timeout > std::chrono::hours(24 * 365);
  const Clock::time_point deadline = forever ? Clock::time_point::max() : Clock::now() + timeout;
  for (const FenceRef& f : pending) {
    std::chrono::nanoseconds left(-1);
    if (!forever) left = std::max(std::chrono::nanoseconds::zero(), deadline - Clock::now());
    if (f->Wait(left) != kOk) return -ETIME;
  }
  return kOk;
}

size_t ReservationObject::FenceCount() const {
  std::lock_guard lock(fences_mu_);
  return fences_.size();
}

}  // namespace sharegpu
