// drm_exec-style helper: locks a set of reservation objects in one WwAcquireCtx with automatic
// -EDEADLK back-off and retry (as Linux's drm_exec; rule S6f).
//
//   ExecContext exec(ExecFlags::kIgnoreDuplicates);
//   exec.Run([&](ExecContext& e) {
//     for (auto* r : objs) if (int err = e.Lock(*r); err) return err;  // -EDEADLK => retried
//     return 0;
//   });
//   ... all locked ...; the destructor (or Fini()) unlocks everything.
#pragma once

#include <functional>
#include <vector>

#include "common/status.h"
#include "sync/reservation.h"

namespace sharegpu {

enum class ExecFlags : unsigned {
  kNone = 0,
  kIgnoreDuplicates = 1,  // DRM_EXEC_IGNORE_DUPLICATES: -EALREADY counts as success
};

class ExecContext {
 public:
  explicit ExecContext(ExecFlags flags = ExecFlags::kNone,
                       WwClass& ww_class = ReservationWwClass());
  ~ExecContext();
  ExecContext(const ExecContext&) = delete;
  ExecContext& operator=(const ExecContext&) = delete;

  // Runs `body` until it returns something other than -EDEADLK. On -EDEADLK every lock is
  // dropped, the contended object is taken with LockSlow first, and body runs again (it must
  // be idempotent up to its Lock() calls). Returns body's final result; on error everything
  // is unlocked.
  Status Run(const std::function<Status(ExecContext&)>& body);

  // drm_exec_lock_obj(): 0, -EDEADLK (return it from body), -EALREADY unless ignored.
  Status Lock(ReservationObject& obj);
  // Locks and reserves n fence slots (drm_exec_prepare_obj).
  Status Prepare(ReservationObject& obj, unsigned num_fences);

  const std::vector<ReservationObject*>& locked() const { return locked_; }
  unsigned retries() const { return retries_; }
  WwAcquireCtx& ticket() { return ctx_; }
  void Fini();  // unlock all, done with the ticket

 private:
  void UnlockAll();
  ExecFlags flags_;
  WwAcquireCtx ctx_;
  std::vector<ReservationObject*> locked_;
  ReservationObject* prelocked_ = nullptr;  // taken by LockSlow before body re-runs
  ReservationObject* contended_ = nullptr;  // returned -EDEADLK in the current pass
  unsigned retries_ = 0;
  bool finished_ = false;
};

}  // namespace sharegpu
