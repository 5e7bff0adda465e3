// Scoped plain (context-less) locking of a reservation, for single-buffer operations that are
// not part of a ww transaction. A context-less ww lock sleeps and never returns -EDEADLK.
#pragma once

#include "sync/reservation.h"

namespace sharegpu {

inline void LockPlain(ReservationObject& resv) {
  [[maybe_unused]] int err = resv.lock().Lock(nullptr);
}

class ResvGuard {
 public:
  explicit ResvGuard(ReservationObject& resv) : resv_(resv) { LockPlain(resv_); }
  ~ResvGuard() { resv_.Unlock(); }
  ResvGuard(const ResvGuard&) = delete;
  ResvGuard& operator=(const ResvGuard&) = delete;

 private:
  ReservationObject& resv_;
};

}  // namespace sharegpu
