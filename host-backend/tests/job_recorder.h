// What the done callbacks of jobs reported, in the order they ran (on the engine's thread):
// for Engine::Submit (Done), for Device::Submit (SubmitDone, which also gives the seqno) and
// for sgb_job_submit (CDone, opaque: the recorder; index 0).
// Shared by the engine, device-job and virgl-engine tests.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "core/device.h"
#include "engine/engine.h"

namespace sharegpu {

class JobRecorder {
 public:
  struct Completion {
    size_t index;
    uint64_t seqno;  // 0 for engine-level jobs (Done)
    Status status;
    uint64_t result;
  };

  JobDone Done(size_t index) {
    return [this, index](Status status, uint64_t result) { Add({index, 0, status, result}); };
  }
  Device::SubmitDone SubmitDone(size_t index) {
    return [this, index](uint64_t seqno, Status status, uint64_t result) {
      Add({index, seqno, status, result});
    };
  }
  static void CDone(void* recorder, uint64_t seqno, int status, uint64_t result) {
    static_cast<JobRecorder*>(recorder)->Add({0, seqno, status, result});
  }
  // Bounded: false when fewer than n completions arrived within `wait`.
  bool WaitFor(size_t n, std::chrono::milliseconds wait = std::chrono::seconds(20)) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, wait, [&] { return done_.size() >= n; });
  }
  std::vector<Completion> Get() {
    std::lock_guard lock(mu_);
    return done_;
  }

 private:
  void Add(const Completion& c) {
    std::lock_guard lock(mu_);
    done_.push_back(c);
    cv_.notify_all();
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Completion> done_;
};

}  // namespace sharegpu
