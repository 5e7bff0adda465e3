// Helpers shared by the sync tests: a recording ww misuse handler, bounded thread runs (a
// deadlock fails the test instead of hanging it) and bounded condition polling.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "sync/ww_mutex.h"

#include "run_threads.h"

namespace sharegpu::testing {


// Installs a handler that records misuse reports instead of aborting.
class MisuseRecorder {
 public:
  MisuseRecorder() { previous_ = SetWwMisuseHandler(&MisuseRecorder::Record); }
  ~MisuseRecorder() {
    SetWwMisuseHandler(previous_);
    std::lock_guard lock(mu());
    log().clear();
  }
  std::vector<WwMisuse> Take() {
    std::lock_guard lock(mu());
    std::vector<WwMisuse> out;
    out.swap(log());
    return out;
  }

 private:
  static std::mutex& mu() {
    static std::mutex m;
    return m;
  }
  static std::vector<WwMisuse>& log() {
    static std::vector<WwMisuse> v;
    return v;
  }
  static void Record(WwMisuse misuse, const char*) {
    std::lock_guard lock(mu());
    log().push_back(misuse);
  }
  WwMisuseHandler previous_;
};


// Polls `pred` (yielding) until it holds; false after kDeadlockTimeout. For states that have no
// notification of their own (e.g. "that context has been wounded").
inline bool WaitUntil(const std::function<bool()>& pred) {
  const auto deadline = std::chrono::steady_clock::now() + kDeadlockTimeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

}  // namespace sharegpu::testing
