#include "sync/exec.h"

#include "common/log.h"

namespace sharegpu {

ExecContext::ExecContext(ExecFlags flags, WwClass& ww_class) : flags_(flags), ctx_(ww_class) {}

ExecContext::~ExecContext() {
  if (!finished_) Fini();
}

Status ExecContext::Run(const std::function<Status(ExecContext&)>& body) {
  for (;;) {
    Status ret = body(*this);
    if (ret == -EDEADLK && contended_ != nullptr) {
      // drm_exec_cleanup() + drm_exec_lock_contended(): drop everything, sleep on the
      // contended object without deadlock detection, and keep it for the next pass.
      ReservationObject* obj = contended_;
      contended_ = nullptr;
      UnlockAll();
      ++retries_;
      if (Status err = obj->LockSlow(&ctx_); err != kOk) return err;
      locked_.push_back(obj);
      prelocked_ = obj;
      continue;
    }
    if (ret != kOk) {
      UnlockAll();
      contended_ = nullptr;
      return ret;
    }
    // As drm_exec_cleanup(): the loop is over, no more locks in this ticket.
    prelocked_ = nullptr;
    ctx_.Done();
    return kOk;
  }
}

Status ExecContext::Lock(ReservationObject& obj) {
  if (prelocked_ == &obj) {
    // Already locked by the back-off path (and in locked_); this is the body's own lock.
    prelocked_ = nullptr;
    return kOk;
  }
  Status ret = obj.Lock(&ctx_);
  if (ret == -EDEADLK) {
    contended_ = &obj;
    return ret;
  }
  if (ret == -EALREADY &&
      (static_cast<unsigned>(flags_) & static_cast<unsigned>(ExecFlags::kIgnoreDuplicates)) != 0) {
    return kOk;
  }
  if (ret != kOk) return ret;
  locked_.push_back(&obj);
  return kOk;
}

Status ExecContext::Prepare(ReservationObject& obj, unsigned num_fences) {
  if (Status ret = Lock(obj); ret != kOk) return ret;
  return obj.ReserveFences(num_fences);
}

void ExecContext::UnlockAll() {
  // Reverse order, as drm_exec_unlock_all(); keeps lock hold times LIFO.
  for (auto it = locked_.rbegin(); it != locked_.rend(); ++it) (*it)->Unlock();
  locked_.clear();
  prelocked_ = nullptr;
}

void ExecContext::Fini() {
  UnlockAll();
  contended_ = nullptr;
  ctx_.Done();
  finished_ = true;
}

}  // namespace sharegpu
