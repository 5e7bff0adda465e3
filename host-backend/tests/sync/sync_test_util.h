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

namespace sharegpu::testing {

// Generous: only a failure detector, never a synchronisation device.
inline constexpr std::chrono::seconds kDeadlockTimeout{60};

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

// Runs fn(i) on n threads and joins them; if they do not all finish within kDeadlockTimeout
// (a deadlock or a lost wake-up), the test binary fails loudly rather than hanging.
inline void RunThreadsBounded(int n, const std::function<void(int)>& fn) {
  std::mutex mu;
  std::condition_variable cv;
  int done = 0;
  std::vector<std::thread> threads;
  threads.reserve(n);
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      fn(i);
      std::lock_guard lock(mu);
      ++done;
      cv.notify_all();
    });
  }
  {
    std::unique_lock lock(mu);
    if (!cv.wait_for(lock, kDeadlockTimeout, [&] { return done == n; })) {
      std::fprintf(stderr, "FATAL: %d of %d threads did not finish: deadlock or lost wake-up\n",
                   n - done, n);
      std::fflush(stderr);
      std::_Exit(1);
    }
  }
  for (auto& t : threads) t.join();
}

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
